"""Knowledge bases: one vector collection + one lexical index + the catalog rows, kept in step.

`KnowledgeBases` opens and creates them and refuses to mix embedding models; `KnowledgeBase`
writes chunks to both indexes and searches each. Extra vectors (generated questions) have ids
`<chunk id>#q<n>`; searches map them back to their chunk, keeping its best rank.

Searches return only live chunks: those the catalog lists for indexed documents (and the old
version of a document being replaced), never a half-written document or both versions of one.
The live set is cached per knowledge base and reloaded when the catalog's generation moves (a
write in any process); searches over-fetch when dead ids take places in a result list.

Writes: one writer per knowledge base across threads and processes (`rag.locks.WriteLocks`, a
thread lock plus an `flock` on `<data dir>/locks/<kb>.lock`), taken in one way only:
`KnowledgeBases.writing(name)`, re-entrant in the holding thread; a writer that would wait without
`wait` gets `Busy`. Taking it opens no store and resolves no model. `KnowledgeBases.remove`,
`reindex` and `drop` take it themselves; ingestion (and any caller that writes more than the index)
holds it around its work and uses the `KnowledgeBase` methods inside it.

Document states, all changed here (the catalog holds the rows): `begin_document` marks a document
pending with the chunk ids about to be written (queries still see the version it replaces);
`finish_document` writes the new chunks, swaps them live (indexed) and deletes the old ones;
`roll_back` undoes a pending document a killed run left; `swap_chunk` puts one edited or added
chunk in (rag/curation.py) by the same steps; `remove_document` marks a document
deleting, deletes its chunks, then its row; `delete_garbage` deletes the old chunks a killed swap
left. Every step is idempotent, so the next run or `rag check --repair` finishes a killed one.
Drop, reindex and orphans: rag/kb_lifecycle.py.

Tags are read from the catalog at query time (`catalog_filter`, `get_chunks`): a document's tags
edited after its upload (rag/doc_edits.py) reach every retriever without rewriting stored payloads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from rag.catalog import Catalog, DocRecord, KbRecord, check_kb_name, check_new_kb_name
from rag.chunk_edits import ChunkEdit
from rag.errors import EmbeddingMismatch, InvalidRequest, NotFound, RagError
from rag.ids import EXTRA_SEP, parent_of  # noqa: F401 (EXTRA_SEP: imported from here by callers)
from rag.kb_lifecycle import KbLifecycle, iter_stored_chunks
from rag.locks import WriteLocks
from rag.protocols import CollectionOptions, Embedder, LexicalIndex, VectorStore
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)

OVERFETCH = 4  # each retry asks the index for this many times more hits
MAX_OVERFETCH = 64  # at most this many times `limit`
NO_MATCH = Filter(doc_ids=("",))  # `catalog_filter`: no document carries the tags asked for


def collapse_to_parents(items: Sequence[ScoredId]) -> list[ScoredId]:
    """Map extra-vector hits to their chunk; a chunk keeps its first (best) position."""
    seen: set[str] = set()
    out: list[ScoredId] = []
    for item in items:
        parent = parent_of(item.chunk_id)
        if parent not in seen:
            seen.add(parent)
            out.append(ScoredId(parent, item.score))
    return out


@dataclass
class CheckReport:
    kb: str
    catalog: int
    vectors: int
    lexical: int
    missing_in_vectors: list[str]
    missing_in_lexical: list[str]
    extra_in_vectors: list[str]
    extra_in_lexical: list[str]
    pending_documents: list[str]
    orphan_collections: list[str] = field(default_factory=list)  # `KnowledgeBases.check` fills these three
    orphan_lexical: list[str] = field(default_factory=list)
    half_dropped: list[str] = field(default_factory=list)  # other knowledge bases whose drop was killed

    @property
    def ok(self) -> bool:
        return not (self.missing_in_vectors or self.missing_in_lexical or self.extra_in_vectors
                    or self.extra_in_lexical or self.pending_documents or self.orphan_collections
                    or self.orphan_lexical or self.half_dropped)


class KnowledgeBase:
    def __init__(self, record: KbRecord, store: VectorStore, lexical: LexicalIndex, embedder: Embedder,
                 catalog: Catalog) -> None:
        self.record = record
        self.store = store
        self.lexical = lexical
        self.embedder = embedder
        self.catalog = catalog
        self._live: tuple[int, frozenset[str]] | None = None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def collection(self) -> str:
        return self.record.collection

    # writing -----------------------------------------------------------------------------------
    def write(self, chunks: Sequence[Chunk], vectors: np.ndarray, delete_ids: Sequence[str] = ()) -> None:
        """Upsert `chunks` with their vectors and delete `delete_ids`, in both indexes.
        Idempotent: repeating it after a crash gives the same state."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if len(chunks):
            self.store.upsert(self.collection, chunks, vectors)
        if delete_ids:
            self.store.delete(self.collection, list(delete_ids))
        self.lexical.replace(list(delete_ids), list(chunks))

    def index_vectors(self, min_unindexed: int = 1) -> bool:
        """Build the vector store's search graph (HNSW) when at least `min_unindexed` vectors are
        outside it (`VectorStore.optimize`); True if it changed. Blocking; the caller holds the
        write lock."""
        return self.store.optimize(self.collection, min_unindexed)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            self.store.delete(self.collection, list(chunk_ids))
            self.lexical.delete(list(chunk_ids))

    # document states (see the module docstring) -------------------------------------------------
    def begin_document(self, doc: DocRecord, chunk_ids: Sequence[str]) -> None:
        """Mark `doc` pending with the chunk ids about to be written; its live ids stay those of the
        version it replaces, so queries see no change."""
        self.catalog.mark_pending(doc, chunk_ids)

    def finish_document(self, doc: DocRecord, chunks: Sequence[Chunk], vectors: np.ndarray,
                        old_ids: Iterable[str], drop_edits: Sequence[str] = ()) -> int:
        """Write the new version of a pending `doc` (not yet live), swap it live in the catalog (and
        delete its chunk edits `drop_edits`, rag/chunk_edits.py), then delete the ids of `old_ids`
        it no longer has; the number deleted."""
        new_ids = [c.id for c in chunks]
        garbage = sorted(set(old_ids) - set(new_ids))
        self.write(chunks, vectors)  # new version written, not yet live
        self.catalog.mark_indexed(doc, new_ids, garbage=garbage, drop_edits=drop_edits)  # the swap
        self.delete(garbage)
        self.catalog.clear_garbage(doc.kb, doc.doc_id)
        return len(garbage)

    def swap_chunk(self, doc: DocRecord, edit: ChunkEdit, new: Chunk | None,
                   replaces: Sequence[str] = ()) -> DocRecord:
        """A chunk edit (rag/curation.py) on indexed `doc`: when `new` is not yet stored, mark `doc`
        pending with its id, embed and write it (a failure rolls the document back); then record
        `edit` and swap `new` in for `replaces` in one catalog transaction, and delete those. `new`
        None: a chunk added by hand is removed (`replaces`), its edit with it. The document's
        record after it."""
        new_id = new.id if new is not None else None
        if new is not None and new.id not in doc.chunk_ids:
            self.begin_document(doc, [new.id])
            try:
                self.write([new], self.embedder.encode_corpus([new.match_text]))
            except BaseException:  # the embedder or a store failed: the document back as it was
                pending = self.catalog.get_doc(self.name, doc.doc_id)
                if pending is not None and pending.state == "pending":
                    self.roll_back(pending)
                raise
        saved = self.catalog.save_chunk_edit(edit, new_id, replaces)
        if replaces:
            self.delete([i for i in replaces if i != new_id])
            self.catalog.clear_garbage(self.name, doc.doc_id)
        return saved

    def delete_garbage(self, doc: DocRecord) -> int:
        """Delete the old chunks a swap of indexed `doc` left in the stores (a run killed after the
        swap); the number deleted."""
        garbage = sorted(set(doc.pending_ids) - set(doc.chunk_ids))
        self.delete(garbage)
        self.catalog.clear_garbage(doc.kb, doc.doc_id)
        return len(garbage)

    def roll_back(self, doc: DocRecord) -> bool:
        """Undo a pending `doc` (a killed run): delete the chunks it was writing, then put the version
        it replaces back (True) or, when it had none, remove it (False)."""
        self.delete(sorted(set(doc.pending_ids) - set(doc.chunk_ids)))
        if doc.chunk_ids:
            self.catalog.roll_back_pending(doc.kb, doc.doc_id)
            return True
        self.remove_document(doc)
        return False

    def remove_document(self, doc: DocRecord) -> int:
        """Delete a document's chunks (current and pending) from both indexes, then its catalog
        record; the number of its chunks removed."""
        self.catalog.mark_deleting(doc.kb, doc.doc_id)
        self.delete(sorted(set(doc.chunk_ids) | set(doc.pending_ids)))
        self.catalog.remove_doc(doc.kb, doc.doc_id)
        return len(doc.chunk_ids)

    def write_documents(self, chunks: Sequence[Chunk], vectors: np.ndarray, *, origin: str = "") -> None:
        """Write chunks brought by the caller (tools, benchmarks, tests) and record each of their
        documents as indexed in the catalog, so that searches see them (not incremental: a document
        written again replaces its record, not its old chunks)."""
        self.write(chunks, vectors)
        by_doc: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_doc.setdefault(chunk.doc_id, []).append(chunk)
        records = []
        for doc_id, members in by_doc.items():
            old = self.catalog.get_doc(self.name, doc_id)
            ids = list(dict.fromkeys([*(old.chunk_ids if old else []), *(c.id for c in members)]))
            first = members[0]
            records.append((DocRecord(self.name, doc_id, first.source, origin, first.doc_hash or "", first.mtime or 0.0,
                                      0, first.title, "", dict(first.tags), "given", "indexed", ids, [], time.time()),
                            ids, ()))
        self.catalog.mark_many_indexed(records)

    # reading -----------------------------------------------------------------------------------
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode_queries(list(texts))

    def live_ids(self) -> frozenset[str]:
        """The chunk ids queries may see (cached until the catalog's generation changes)."""
        cached = self._live
        if cached is None or cached[0] != self.catalog.generation(self.name):
            cached = self._live = self.catalog.live_chunk_ids(self.name)
        return cached[1]

    def _live_search(self, search: Callable[[int], list[ScoredId]], limit: int) -> list[ScoredId]:
        live = self.live_ids()
        fetch = limit
        while True:
            hits = search(fetch)
            kept = collapse_to_parents([h for h in hits if h.chunk_id in live])
            if len(kept) >= limit or len(hits) < fetch or fetch >= limit * MAX_OVERFETCH:
                return kept[:limit]
            fetch = min(fetch * OVERFETCH, limit * MAX_OVERFETCH)

    def catalog_filter(self, flt: Filter | None) -> Filter | None:
        """`flt` with its tags read from the catalog, where tags edited after the upload live
        (`Catalog.update_doc_meta`; the stored chunks keep the tags they were written with): a tag
        filter becomes the ids of the documents that carry every tag now. `NO_MATCH` when none does."""
        if flt is None or not flt.tags:
            return flt
        tagged = self.catalog.doc_ids_with_tags(self.name, flt.tags)
        ids = [d for d in flt.doc_ids if d in set(tagged)] if flt.doc_ids else tagged
        return replace(flt, tags=(), doc_ids=tuple(ids)) if ids else NO_MATCH

    def search_dense(self, vector: np.ndarray, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        flt = self.catalog_filter(flt)
        if flt is NO_MATCH:
            return []
        return self._live_search(lambda n: self.store.search(self.collection, vector, n, flt), limit)

    def search_bm25(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        flt = self.catalog_filter(flt)
        if flt is NO_MATCH:
            return []
        return self._live_search(lambda n: self.lexical.search(query, n, flt), limit)

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """The chunks read back from their payloads, with their document's current tags."""
        payloads = self.store.get_payloads(self.collection, list(chunk_ids))
        chunks = {cid: Chunk.from_payload(p) for cid, p in payloads.items()}
        tags = self.catalog.tags_of(self.name, [c.doc_id for c in chunks.values()])
        return {cid: replace(c, tags=tags[c.doc_id]) if c.doc_id in tags and tags[c.doc_id] != c.tags else c
                for cid, c in chunks.items()}

    def iter_chunks(self, chunk_ids: Sequence[str] | None = None, batch: int = 1024) -> Iterator[list[Chunk]]:
        """The stored chunks of `chunk_ids` (default: every id the vector store holds), read back
        from their payloads `batch` at a time, in id order."""
        yield from iter_stored_chunks(self.store, self.collection, chunk_ids, batch)

    def count(self) -> int:
        return self.store.count(self.collection)

    def check(self) -> CheckReport:
        """Compare the chunk ids of the catalog, the vector store and the lexical index."""
        expected = self.catalog.all_chunk_ids(self.name)
        vectors = self.store.ids(self.collection)
        lexical = self.lexical.ids()
        pending = [d.source for d in self.catalog.list_docs(self.name) if d.state != "indexed"]
        return CheckReport(
            kb=self.name, catalog=len(expected), vectors=len(vectors), lexical=len(lexical),
            missing_in_vectors=sorted(expected - vectors), missing_in_lexical=sorted(expected - lexical),
            extra_in_vectors=sorted(vectors - expected), extra_in_lexical=sorted(lexical - expected),
            pending_documents=pending)


class KnowledgeBases(KbLifecycle):
    """Opens knowledge bases; the store and embedder are shared, one lexical index per kb; `store`
    and `embedder` are given as functions called on first use, so that taking a write lock opens
    no store and resolves no model.
    `lexical_names` lists the lexical indexes that exist, by collection (none where BM25 lives in
    the vector store). `own_store`: every collection of the store is this service's (the embedded
    engines under the data folder); else (a Qdrant server other applications may share) only
    `<kb>__v<n>` collections can be orphans."""

    def __init__(self, catalog: Catalog, store: Callable[[], VectorStore],
                 lexical_factory: Callable[[str], LexicalIndex], embedder: Callable[[], Embedder], collection_options: CollectionOptions | None = None, *,
                 locks: WriteLocks, lexical_names: Callable[[], Sequence[str]] | None = None,
                 own_store: bool = True) -> None:
        self.locks = locks
        self.lexical_names = lexical_names or (lambda: [])
        self.own_store = own_store
        self.catalog = catalog
        self._store, self._embedder = store, embedder
        self.lexical_factory = lexical_factory
        self.collection_options = collection_options or CollectionOptions()
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = threading.RLock()

    @cached_property
    def store(self) -> VectorStore:
        return self._store()

    @cached_property
    def embedder(self) -> Embedder:
        return self._embedder()

    def list(self) -> list[KbRecord]:
        """The knowledge bases; drops a killed process left are finished first (or else hidden)."""
        try:
            self.finish_drops()
        except RagError as exc:
            log.warning("could not finish an interrupted drop: %s", exc.message)
        return self.catalog.list_kbs()

    def exists(self, name: str) -> bool:
        return self.catalog.get_kb(name) is not None

    def close(self) -> None:
        """Close the lexical indexes this object opened (the store and the catalog are shared: the
        caller's); `open` opens them again. An index left open keeps its SQLite connection until
        the garbage collector finds it, in whatever process or thread that happens."""
        with self._lock:
            opened, self._open = list(self._open.values()), {}
        for kb in opened:
            kb.lexical.close()

    def _check_model(self, record: KbRecord) -> None:
        """The configured model must be the one the knowledge base was built with (`model_check`:
        cheap, so opening a knowledge base to check or remove documents stays cheap)."""
        check = self.model_check(record, dim_always=False)
        if check.differs:
            raise EmbeddingMismatch(check.message(), field="kb")

    def open(self, name: str) -> KnowledgeBase:
        check_kb_name(name)
        with self._lock:
            if name in self._open:
                return self._open[name]
            record = self.catalog.get_kb(name)
            if record is None:
                raise NotFound(f"unknown knowledge base {name!r}{self._finish_dropping(name)}", field="kb")
            self._check_model(record)
            lexical = self.lexical_factory(record.collection)
            if lexical.stale:
                self._rebuild_lexical(record, lexical)
            kb = KnowledgeBase(record, self.store, lexical, self.embedder, self.catalog)
            self._open[name] = kb
            return kb

    def _rebuild_lexical(self, record: KbRecord, lexical: LexicalIndex, batch: int = 1024) -> None:
        """Re-tokenise a BM25 index written by an older tokenizer from the chunk texts that the
        vector store holds (nothing is re-parsed or re-embedded)."""
        started = time.perf_counter()
        chunks = [c for page in iter_stored_chunks(self.store, record.collection, None, batch) for c in page]
        lexical.rebuild(chunks)
        log.warning("BM25 index of knowledge base %s was built by an older tokenizer: rebuilt from its %d stored "
                    "chunks in %.1f s", record.name, len(chunks), time.perf_counter() - started)

    def open_or_create(self, name: str, meta: dict | None = None) -> KnowledgeBase:
        check_kb_name(name)
        with self._lock:
            if self.catalog.get_kb(name) is None:
                check_new_kb_name(name)
                dropping = self.catalog.get_dropping(name)
                if dropping is not None:  # a killed drop: finished before the name is taken again
                    self._finish_drop(dropping)
                collection = name
                owner = self.catalog.collection_owner(collection)
                if owner is not None:  # a knowledge base created before `__` was reserved, re-embedded into it
                    raise InvalidRequest(f"cannot create knowledge base {name!r}: its collection belongs to "
                                         f"knowledge base {owner!r}", field="kb")
                self.store.ensure_collection(collection, self.embedder.dim, self.collection_options)
                self.catalog.create_kb(name, self.embedder.name, self.embedder.dim, collection, meta)
                log.info("created knowledge base %s (model %s, dim %d)", name, self.embedder.name, self.embedder.dim)
            return self.open(name)

    @contextmanager
    def writing(self, name: str, wait: bool = False) -> Iterator[None]:
        """Hold the write lock of knowledge base `name` (Busy at once while another writer has it,
        unless `wait`): the one way to take it. Re-entrant in the holding thread."""
        with self.locks.hold(name, wait=wait):
            yield

    def remove(self, name: str, source: str, *, wait: bool = False) -> tuple[DocRecord, int]:
        """Remove the document `source` from knowledge base `name` under its write lock: the record
        removed and its chunk count. NotFound for an unknown knowledge base (never created)."""
        check_kb_name(name)
        self.catalog.require_kb(name)
        with self.writing(name, wait):
            kb = self.open(name)
            doc = self.catalog.find_doc_by_source(name, source)
            if doc is None:
                raise RagError(f"no document {source!r} in knowledge base {name!r}")
            return doc, kb.remove_document(doc)

    def require(self, name: str) -> KbRecord:
        """The record of `name`, also when a drop of it was interrupted; NotFound otherwise."""
        check_kb_name(name)
        record = self.catalog.get_kb(name) or self.catalog.get_dropping(name)
        if record is None:
            raise NotFound(f"unknown knowledge base {name!r}", field="kb")
        return record
