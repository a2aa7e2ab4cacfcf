"""Wiring for ingestion, shared by the CLI and the API: an Ingestor for a knowledge base built from
settings, a per-knowledge-base lock, and re-embedding into a new collection."""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ingest.chunkers import make_chunker
from ingest.formats.ocr import OcrOptions
from ingest.limits import ParseLimits
from ingest.questions import QuestionWriter
from ingest.runner import Ingestor
from rag.errors import Busy
from rag.factory import Services
from rag.settings import Settings
from rag.types import Chunk

log = logging.getLogger(__name__)
_thread_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextmanager
def kb_write_lock(services: Services, kb: str, wait: bool = True) -> Iterator[None]:
    """One writer per knowledge base across threads and processes."""
    with _guard:
        tlock = _thread_locks.setdefault(kb, threading.Lock())
    if not tlock.acquire(blocking=wait):
        raise Busy(f"knowledge base {kb!r} is being written by another job", field="kb")
    try:
        lock_dir = services.data_dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{kb}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise Busy(f"knowledge base {kb!r} is being written by another process", field="kb") from exc
            yield
    finally:
        tlock.release()


def ocr_options(settings: Settings, page_progress=None) -> OcrOptions:
    return OcrOptions(enabled=settings.ocr == "auto", dpi=settings.ocr_dpi, max_side=settings.ocr_max_side,
                      max_pixels=settings.ocr_max_pixels, progress=page_progress)


def build_ingestor(services: Services, kb: str, *, tags: dict[str, str] | None = None, progress=None,
                   page_progress=None) -> Ingestor:
    s = services.settings
    embedder = services.embedder if s.chunker == "semantic" else None
    chunker = make_chunker(s.chunker, size=s.chunk_size, overlap=s.chunk_overlap, embedder=embedder,
                           percentile=s.semantic_percentile)
    writer = QuestionWriter(services.llm, n=s.generate_questions) if s.generate_questions else None
    knowledge_base = services.kbs.open_or_create(kb)
    limits = ParseLimits(max_file_mb=s.max_file_mb, max_unzipped_mb=s.max_unzipped_mb,
                         max_zip_ratio=s.max_zip_ratio)
    return Ingestor(knowledge_base, chunker, tags=tags, question_writer=writer,
                    batch_chunks=max(4 * s.embed_batch_size, 64), progress=progress, headers=s.chunk_headers,
                    embed_batch=s.embed_batch_size, limits=limits, ocr=ocr_options(s, page_progress))


def reindex(services: Services, kb: str, batch: int = 256) -> tuple[int, str]:
    """Re-embed every live chunk of `kb` with the configured model into a new collection (chunk texts
    are read back from the old collection, nothing is re-parsed), then switch the knowledge base to it
    and drop the old collection. Queries keep working on the old collection until the switch."""
    catalog = services.catalog
    record = catalog.require_kb(kb)
    store = services.store
    embedder = services.embedder
    version = int(record.meta.get("version", 1)) + 1 if isinstance(record.meta, dict) else 2
    new_collection = f"{kb}__v{version}"
    while store.collection_exists(new_collection) or catalog.collection_owner(new_collection) is not None:
        version += 1
        new_collection = f"{kb}__v{version}"
    _, live = catalog.live_chunk_ids(kb)
    ids = sorted(store.ids(record.collection) & live)  # what queries see: no half-written or swapped-out chunk
    store.ensure_collection(new_collection, embedder.dim, services.collection_options())
    lexical = services.lexical_factory(new_collection)
    for i in range(0, len(ids), batch):
        payloads = store.get_payloads(record.collection, ids[i : i + batch])
        chunks = [Chunk.from_payload(p) for p in payloads.values()]
        vectors = embedder.encode_corpus([c.match_text for c in chunks])
        store.upsert(new_collection, chunks, vectors)
        lexical.add(chunks)
    services.kbs.switch_collection(kb, new_collection)
    old_lexical = services.lexical_factory(record.collection)
    old_lexical.drop()
    store.drop_collection(record.collection)
    log.info("reindexed %s: %d chunks into %s with %s", kb, len(ids), new_collection, embedder.name)
    return len(ids), new_collection
