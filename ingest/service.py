"""Wiring for ingestion, shared by the CLI and the API: an Ingestor for a knowledge base built from
settings. The write lock, removal, re-embedding and dropping live on the knowledge bases
(`rag.kb.KnowledgeBases`: `writing`, `remove`, `reindex`, `drop`).

The chunking of an ingest is the server's settings, overridden by the knowledge base's own
(`rag.kb_settings`), overridden by the ingest's `overrides` (`rag ingest` flags, a re-parse's
settings); its tags are the knowledge base's, then the ingest's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ingest.chunkers import make_chunker
from ingest.formats.ocr import OcrOptions
from ingest.limits import ParseLimits
from ingest.questions import QuestionWriter
from ingest.runner import WRITE_BEHIND, Ingestor
from rag.chunk_edits import KEEP
from rag.factory import Services
from rag.kb_settings import Chunking, KbSettings, resolve
from rag.settings import Settings


def ocr_options(settings: Settings, page_progress=None) -> OcrOptions:
    return OcrOptions(enabled=settings.ocr == "auto", dpi=settings.ocr_dpi, max_side=settings.ocr_max_side,
                      max_pixels=settings.ocr_max_pixels, max_pages=settings.ocr_max_pages,
                      max_seconds=settings.ocr_max_seconds_per_file, progress=page_progress)


def server_chunking(settings: Settings) -> Chunking:
    return Chunking(settings.chunker, settings.chunk_size, settings.chunk_overlap, settings.ocr == "auto")


def ocr_off_by(own: KbSettings, overrides: Mapping[str, Any] | None, overrides_by: str) -> str:
    """What turned OCR off for an ingest, as a skip reason names it: the ingest's own options
    (`overrides_by`), the knowledge base's settings, or the server's RAG_OCR."""
    if (overrides or {}).get("ocr") is False:
        return overrides_by
    return "the knowledge base's settings: ocr off" if own.ocr is False else "RAG_OCR=off"


def kb_chunking(services: Services, kb: str, overrides: Mapping[str, Any] | None = None,
                prefix: str = "") -> Chunking:
    """The chunking an ingest of `kb` uses now (server < knowledge base < `overrides`), checked."""
    record = services.catalog.get_kb(kb)
    own = KbSettings.from_meta(record.meta if record is not None else None)
    return resolve(server_chunking(services.settings), own.overrides(), overrides, prefix=prefix)


def build_ingestor(services: Services, kb: str, *, tags: dict[str, str] | None = None, progress=None,
                   page_progress=None, titles: dict[str, str] | None = None,
                   overrides: Mapping[str, Any] | None = None,
                   file_tags: Mapping[str, dict[str, str]] | None = None, edits: str = KEEP,
                   overrides_by: str = "this ingest's settings: ocr off") -> Ingestor:
    """An Ingestor of `kb` (created when missing). `overrides`: chunking fields over the knowledge
    base's settings (`overrides_by`: how a skip reason names them when they turn OCR off); `file_tags`:
    per source, the tags that file keeps instead (a re-parse); `edits`: what a changed file's
    re-ingest does with its chunk edits (keep or drop)."""
    s = services.settings
    knowledge_base = services.kbs.open_or_create(kb)
    chunking = kb_chunking(services, kb, overrides)
    own = KbSettings.from_meta(services.catalog.require_kb(kb).meta)
    embedder = services.embedder if chunking.chunker == "semantic" else None
    chunker = make_chunker(chunking.chunker, size=chunking.chunk_size, overlap=chunking.chunk_overlap,
                           embedder=embedder, percentile=s.semantic_percentile)
    writer = QuestionWriter(services.llm, n=s.generate_questions) if s.generate_questions else None
    limits = ParseLimits(max_file_mb=s.max_file_mb, max_unzipped_mb=s.max_unzipped_mb,
                         max_zip_ratio=s.max_zip_ratio, max_rows=s.parse_max_rows, max_cells=s.parse_max_cells,
                         max_seconds=s.parse_max_seconds)
    ocr = replace(ocr_options(s, page_progress), enabled=chunking.ocr,
                  off_by=ocr_off_by(own, overrides, overrides_by))
    return Ingestor(knowledge_base, chunker, tags={**own.tags, **(tags or {})}, question_writer=writer,
                    batch_chunks=max(4 * s.embed_batch_size, 64), progress=progress,
                    embed_batch=s.embed_batch_size, limits=limits, ocr=ocr,
                    write_behind=WRITE_BEHIND if s.ingest_overlap_writes else 0, titles=titles, file_tags=file_tags,
                    edits=edits)
