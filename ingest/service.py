"""Wiring for ingestion, shared by the CLI and the API: an Ingestor for a knowledge base built from
settings. The write lock, removal, re-embedding and dropping live on the knowledge bases
(`rag.kb.KnowledgeBases`: `writing`, `remove`, `reindex`, `drop`)."""

from __future__ import annotations

from ingest.chunkers import make_chunker
from ingest.formats.ocr import OcrOptions
from ingest.limits import ParseLimits
from ingest.questions import QuestionWriter
from ingest.runner import WRITE_BEHIND, Ingestor
from rag.chunk_edits import KEEP
from rag.factory import Services
from rag.settings import Settings


def ocr_options(settings: Settings, page_progress=None) -> OcrOptions:
    return OcrOptions(enabled=settings.ocr == "auto", dpi=settings.ocr_dpi, max_side=settings.ocr_max_side,
                      max_pixels=settings.ocr_max_pixels, max_pages=settings.ocr_max_pages,
                      max_seconds=settings.ocr_max_seconds_per_file, progress=page_progress)


def build_ingestor(services: Services, kb: str, *, tags: dict[str, str] | None = None, progress=None,
                   page_progress=None, titles: dict[str, str] | None = None, edits: str = KEEP) -> Ingestor:
    s = services.settings
    embedder = services.embedder if s.chunker == "semantic" else None
    chunker = make_chunker(s.chunker, size=s.chunk_size, overlap=s.chunk_overlap, embedder=embedder,
                           percentile=s.semantic_percentile)
    writer = QuestionWriter(services.llm, n=s.generate_questions) if s.generate_questions else None
    knowledge_base = services.kbs.open_or_create(kb)
    limits = ParseLimits(max_file_mb=s.max_file_mb, max_unzipped_mb=s.max_unzipped_mb,
                         max_zip_ratio=s.max_zip_ratio, max_rows=s.parse_max_rows, max_cells=s.parse_max_cells,
                         max_seconds=s.parse_max_seconds)
    return Ingestor(knowledge_base, chunker, tags=tags, question_writer=writer,
                    batch_chunks=max(4 * s.embed_batch_size, 64), progress=progress,
                    embed_batch=s.embed_batch_size, limits=limits, ocr=ocr_options(s, page_progress),
                    write_behind=WRITE_BEHIND if s.ingest_overlap_writes else 0, titles=titles, edits=edits)
