"""Knowledge bases: one vector collection + one lexical index + the catalog rows, kept in step.

`KnowledgeBases` opens and creates them and refuses to mix embedding models; `KnowledgeBase`
writes chunks to both indexes and searches each. Extra vectors (generated questions) have ids
`<chunk id>#q<n>`; searches map them back to their chunk, keeping its best rank.

Searches return only live chunks: those the catalog lists for indexed documents (and the old
version of a document being replaced), never a half-written document or both versions of one.
The live set is cached per knowledge base and reloaded when the catalog's generation moves (a
write in any process); searches over-fetch when dead ids take places in a result list.

Writes: one writer per knowledge base across threads and processes (`WriteLocks`, a thread lock
plus an `flock` on `<data dir>/locks/<kb>.lock`); a writer that would wait without `wait` gets
`Busy`. `KnowledgeBases.remove`, `reindex` and `drop` take the lock themselves; ingestion (and
any caller that writes more than the index) holds `KnowledgeBases.writing(name)` around its work
and uses the `KnowledgeBase` primitives (`write`, `delete`, `remove_document`) inside it.

Crash safety of the lifecycle: a drop marks the knowledge base dropping in the catalog, deletes its
indexes, then its rows; whoever opens, creates or drops it next finishes a drop that was killed
(`list` hides it). Orphans are collections and BM25 folders that no catalog record names (a killed
reindex's `<kb>__vN`, the old collection of a reindex killed after its switch) and whose knowledge
base's write lock nobody holds (a reindex in progress): `drop` and `reindex` remove those of their
knowledge base, `rag check --repair` (`rag.repair`) all of them."""

from __future__ import annotations

import fcntl
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.catalog import COLLECTION_SEP, Catalog, DocRecord, KbRecord, check_kb_name, check_new_kb_name
from rag.errors import Busy, EmbeddingMismatch, InvalidRequest, NotFound, RagError
from rag.protocols import CollectionOptions, Embedder, LexicalIndex, VectorStore
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)

EXTRA_SEP = "#"
OVERFETCH = 4  # each retry asks the index for this many times more hits
MAX_OVERFETCH = 64  # at most this many times `limit`
_REINDEXED = re.compile(rf"^(.+){COLLECTION_SEP}v\d+$")  # `<kb>__v<n>`: a collection `reindex` made


def collection_kb(collection: str) -> str:
    """The knowledge base a collection was made for (`<kb>` or `<kb>__v<n>`): the one whose write
    lock guards it while it is written."""
    match = _REINDEXED.match(collection)
    return match.group(1) if match else collection


def parent_of(chunk_id: str) -> str:
    return chunk_id.split(EXTRA_SEP, 1)[0]


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


class WriteLocks:
    """One writer per knowledge base: a thread lock (shared by every `WriteLocks` of this process
    over the same folder) and an exclusive `flock` on `<folder>/<kb>.lock` for other processes.
    Re-entrant in the holding thread: a caller may take the lock before opening the stores, and
    the knowledge-base operation it calls takes it again without blocking itself."""

    _threads: dict[str, threading.RLock] = {}
    _depth: dict[str, int] = {}
    _guard = threading.Lock()

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @contextmanager
    def hold(self, kb: str, wait: bool = True) -> Iterator[None]:
        """Hold the write lock of `kb`; without `wait`, raise Busy when someone else holds it."""
        path = self.folder / f"{kb}.lock"
        key = str(path.absolute())
        with self._guard:
            tlock = self._threads.setdefault(key, threading.RLock())
        if not tlock.acquire(blocking=wait):
            raise Busy(f"knowledge base {kb!r} is being written by another job", field="kb")
        try:
            if self._depth.get(key, 0):  # this thread holds it already (and the file lock with it)
                self._depth[key] += 1
                try:
                    yield
                finally:
                    self._depth[key] -= 1
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError as exc:
                    raise Busy(f"knowledge base {kb!r} is being written by another process", field="kb") from exc
                self._depth[key] = 1
                try:
                    yield
                finally:
                    self._depth[key] = 0
        finally:
            tlock.release()

    def held_elsewhere(self, kb: str) -> bool:
        """Whether another thread or process holds the write lock of `kb` now (creates no lock file)."""
        if not (self.folder / f"{kb}.lock").exists():
            return False
        try:
            with self.hold(kb, wait=False):
                return False
        except Busy:
            return True


@dataclass
class Orphans:
    """Collections and BM25 indexes that no catalog record names: `collections` and `lexical` are
    free to remove; `in_progress` are being written under their knowledge base's lock (a reindex)."""

    collections: list[str] = field(default_factory=list)
    lexical: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(set(self.collections) | set(self.lexical))


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

    def remove_document(self, doc: DocRecord) -> int:
        """Delete a document's chunks (current and pending) from both indexes, then its catalog
        record; the number of its chunks removed. The caller holds the write lock."""
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

    def search_dense(self, vector: np.ndarray, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        return self._live_search(lambda n: self.store.search(self.collection, vector, n, flt), limit)

    def search_bm25(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        return self._live_search(lambda n: self.lexical.search(query, n, flt), limit)

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        payloads = self.store.get_payloads(self.collection, list(chunk_ids))
        return {cid: Chunk.from_payload(p) for cid, p in payloads.items()}

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


class KnowledgeBases:
    """Opens knowledge bases; the store and embedder are shared, one lexical index per kb.
    `lexical_names` lists the lexical indexes that exist, by collection (none where BM25 lives in
    the vector store). `own_store`: every collection of the store is this service's (the embedded
    engines under the data folder); else (a Qdrant server other applications may share) only
    `<kb>__v<n>` collections can be orphans."""

    def __init__(self, catalog: Catalog, store: VectorStore, lexical_factory: Callable[[str], LexicalIndex],
                 embedder: Embedder, collection_options: CollectionOptions | None = None, *,
                 locks: WriteLocks, lexical_names: Callable[[], Sequence[str]] | None = None,
                 own_store: bool = True) -> None:
        self.locks = locks
        self.lexical_names = lexical_names or (lambda: [])
        self.own_store = own_store
        self.catalog = catalog
        self.store = store
        self.lexical_factory = lexical_factory
        self.embedder = embedder
        self.collection_options = collection_options or CollectionOptions()
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = threading.RLock()

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
        """The configured model must be the one the knowledge base was built with. Reads the
        embedder's name and dimension only: neither loads the model (`Embedder.dim` comes from
        the model's files), so opening a knowledge base to check or remove documents stays cheap."""
        name = self.embedder.name
        dim = self.embedder.dim if record.embed_model == name else None
        if record.embed_model != name or record.dim != dim:
            shown = f" (dim {dim})" if dim is not None else ""
            raise EmbeddingMismatch(
                f"knowledge base {record.name!r} was built with embedding model {record.embed_model!r} "
                f"(dim {record.dim}); the configured model is {name!r}{shown}. "
                f"Set RAG_EMBED_MODEL back, or run `rag reindex --kb {record.name}` to re-embed it", field="kb")

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
        unless `wait`)."""
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

    def drop(self, name: str, *, wait: bool = False) -> bool:
        """Delete knowledge base `name`, its indexes, its orphans and catalog rows, under its write
        lock; crash-safe (marked dropping first, rows removed last). True when it finished a drop
        that a killed process had begun."""
        self.require(name)
        with self.writing(name, wait):
            record = self.require(name)
            self._finish_drop(record)
        return record.dropping

    def _finish_drop(self, record: KbRecord) -> None:
        """Mark, delete the indexes, remove the rows; every step after the mark is idempotent, so
        the next call finishes a killed one. Busy while another writer holds the lock."""
        name = record.name
        with self.writing(name), self._lock:
            record = self.catalog.get_kb(name) or self.catalog.get_dropping(name)
            if record is None:  # finished by another process meanwhile
                return
            if not record.dropping:
                self.catalog.mark_dropping(name)
            kb = self._open.pop(name, None)
            lexical = kb.lexical if kb else self.lexical_factory(record.collection)
            lexical.drop()
            if self.store.collection_exists(record.collection):
                self.store.drop_collection(record.collection)
            self.drop_orphans(kb=name)
            self.catalog.delete_kb(name)
        log.info("dropped knowledge base %s", name)

    def _finish_dropping(self, name: str) -> str:
        """Finish a killed drop of `name` if there is one: a note for the caller's message."""
        record = self.catalog.get_dropping(name)
        if record is None:
            return ""
        try:
            self._finish_drop(record)
        except Busy:
            return " (it is being dropped)"
        return " (an interrupted drop of it was finished now)"

    def finish_drops(self, allowed: Callable[[str], bool] | None = None) -> list[str]:
        """Finish the drops killed processes left (those of the knowledge bases `allowed` accepts);
        one whose lock another writer holds is left to it. The names finished."""
        done = []
        for record in self.catalog.dropping_kbs():
            if allowed is not None and not allowed(record.name):
                continue
            try:
                self._finish_drop(record)
            except Busy:
                continue
            done.append(record.name)
        return done

    def orphans(self) -> Orphans:
        """Collections and BM25 indexes that no catalog record names (see the module docstring)."""
        named = self.catalog.collections()
        vectors = {c for c in self.store.collections() if c not in named and (self.own_store or _REINDEXED.match(c))}
        lexical = {c for c in self.lexical_names() if c not in named}
        found = Orphans()
        for name in sorted(vectors | lexical):
            if self.locks.held_elsewhere(collection_kb(name)):
                found.in_progress.append(name)
                continue
            if name in vectors:
                found.collections.append(name)
            if name in lexical:
                found.lexical.append(name)
        return found

    def drop_orphans(self, kb: str | None = None, allowed: Callable[[str], bool] | None = None) -> list[str]:
        """Remove the orphans (only those of knowledge base `kb`, or of those `allowed` accepts),
        each under its knowledge base's write lock; the names removed."""
        found = self.orphans()
        removed = []
        for name in found.names():
            owner = collection_kb(name)
            if (kb is not None and owner != kb) or (allowed is not None and not allowed(owner)):
                continue
            try:
                with self.locks.hold(owner, wait=False):
                    if name in self.catalog.collections():  # taken meanwhile
                        continue
                    if name in found.lexical:
                        self.lexical_factory(name).drop()
                    if name in found.collections:
                        self.store.drop_collection(name)
            except Busy:
                continue
            removed.append(name)
            log.info("removed orphan collection %s", name)
        return removed

    def check(self, name: str, allowed: Callable[[str], bool] | None = None) -> CheckReport:
        """`KnowledgeBase.check` of `name`, plus what belongs to no knowledge base: orphans and
        the drops killed processes left (those of the knowledge bases `allowed` accepts)."""
        report = self.open(name).check()
        keep = allowed or (lambda _: True)
        found = self.orphans()
        report.orphan_collections = [c for c in found.collections if keep(collection_kb(c))]
        report.orphan_lexical = [c for c in found.lexical if keep(collection_kb(c))]
        report.half_dropped = [r.name for r in self.catalog.dropping_kbs() if keep(r.name)]
        return report

    def reindex(self, name: str, *, batch: int = 256, wait: bool = False) -> tuple[int, str]:
        """Re-embed every live chunk of `name` with the configured model into a new collection, under
        its write lock (chunk texts are read back from the old collection, nothing is re-parsed),
        then switch the knowledge base to it and drop the old collection. Queries keep working on
        the old collection until the switch. The chunk count and the new collection."""
        self.catalog.require_kb(name)
        with self.writing(name, wait):
            record = self.catalog.require_kb(name)
            self.drop_orphans(kb=name)  # what killed reindexes left
            store, embedder = self.store, self.embedder
            version = int(record.meta.get("version", 1)) + 1 if isinstance(record.meta, dict) else 2
            new_collection = f"{name}__v{version}"
            while store.collection_exists(new_collection) or self.catalog.collection_owner(new_collection) is not None:
                version += 1
                new_collection = f"{name}__v{version}"
            _, live = self.catalog.live_chunk_ids(name)
            ids = sorted(store.ids(record.collection) & live)  # what queries see: no half-written or swapped-out chunk
            store.ensure_collection(new_collection, embedder.dim, self.collection_options)
            lexical = self.lexical_factory(new_collection)
            try:
                for chunks in iter_stored_chunks(store, record.collection, ids, batch):
                    store.upsert(new_collection, chunks, embedder.encode_corpus([c.match_text for c in chunks]))
                    lexical.add(chunks)
            finally:
                lexical.close()  # `open` opens it again once it is the knowledge base's
            self._switch_collection(name, new_collection)
            self.lexical_factory(record.collection).drop()
            store.drop_collection(record.collection)
        log.info("reindexed %s: %d chunks into %s with %s", name, len(ids), new_collection, embedder.name)
        return len(ids), new_collection

    def _switch_collection(self, name: str, collection: str) -> None:
        """Point a knowledge base at a re-embedded collection."""
        with self._lock:
            self.catalog.update_kb(name, embed_model=self.embedder.name, dim=self.embedder.dim, collection=collection)
            old = self._open.pop(name, None)
            if old is not None:
                old.lexical.close()


def iter_stored_chunks(store: VectorStore, collection: str, chunk_ids: Sequence[str] | None = None,
                       batch: int = 1024) -> Iterator[list[Chunk]]:
    """Chunks read back from the payloads of `collection` (`chunk_ids`, default every stored id),
    `batch` ids at a time in id order; ids without a payload are skipped."""
    ids = sorted(store.ids(collection) if chunk_ids is None else chunk_ids)
    for i in range(0, len(ids), batch):
        payloads = store.get_payloads(collection, ids[i:i + batch])
        chunks = [Chunk.from_payload(p) for p in payloads.values()]
        if chunks:
            yield chunks
