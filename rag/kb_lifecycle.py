"""The lifecycle of knowledge bases beyond their documents: drop, reindex, orphans, the cross-store
check. `KbLifecycle` is a part of `rag.kb.KnowledgeBases` (its base class), kept here so that rag/kb.py
stays about opening knowledge bases and writing their documents.

Crash safety of the lifecycle: a drop marks the knowledge base dropping in the catalog, deletes its
indexes, then its rows; whoever opens, creates or drops it next finishes a drop that was killed
(`list` hides it). Orphans are collections and BM25 folders that no catalog record names (a killed
reindex's `<kb>__vN`, the old collection of a reindex killed after its switch) and whose knowledge
base's write lock nobody holds (a reindex in progress): `drop` and `reindex` remove those of their
knowledge base, `rag check --repair` (`rag.repair`) all of them.

`model_check` compares the model a knowledge base records with the configured embedder (opening a
knowledge base refuses a mismatch: `EmbeddingMismatch`); `reindex` re-embeds it with the configured
one. A reindex killed anywhere is finished by running it again: before its switch, the old
collection is still the live one and the half-written `<kb>__vN` an orphan the next reindex removes;
after it, the old collection is the orphan (the next reindex re-embeds again, with the same model)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rag.catalog import COLLECTION_SEP, Catalog, KbRecord
from rag.errors import Busy, RagError
from rag.locks import WriteLocks
from rag.protocols import CollectionOptions, Embedder, LexicalIndex, VectorStore
from rag.types import Chunk

if TYPE_CHECKING:
    from rag.kb import CheckReport, KnowledgeBase

log = logging.getLogger(__name__)

_REINDEXED = re.compile(rf"^(.+){COLLECTION_SEP}v\d+$")  # `<kb>__v<n>`: a collection `reindex` made


def collection_kb(collection: str) -> str:
    """The knowledge base a collection was made for (`<kb>` or `<kb>__v<n>`): the one whose write
    lock guards it while it is written."""
    match = _REINDEXED.match(collection)
    return match.group(1) if match else collection


@dataclass(frozen=True)
class ModelCheck:
    """The embedding model a knowledge base records against the configured one (`server_dim` None:
    the configured model's dimension could not be read, and its name differs anyway)."""

    kb: str
    kb_model: str
    kb_dim: int
    server_model: str
    server_dim: int | None

    @property
    def differs(self) -> bool:
        return self.kb_model != self.server_model or self.kb_dim != self.server_dim

    def message(self) -> str:
        """What to do about a difference ("" when there is none)."""
        if not self.differs:
            return ""
        shown = f" (dim {self.server_dim})" if self.server_dim is not None else ""
        return (f"knowledge base {self.kb!r} was built with embedding model {self.kb_model!r} (dim {self.kb_dim}); "
                f"the configured model is {self.server_model!r}{shown}. Set RAG_EMBED_MODEL back, or run "
                f"`rag reindex --kb {self.kb}` to re-embed it")


@dataclass
class Orphans:
    """Collections and BM25 indexes that no catalog record names: `collections` and `lexical` are
    free to remove; `in_progress` are being written under their knowledge base's lock (a reindex)."""

    collections: list[str] = field(default_factory=list)
    lexical: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(set(self.collections) | set(self.lexical))


class KbLifecycle:
    """Drop, reindex, orphans and the cross-store check of `KnowledgeBases` (which provides these
    attributes and `writing`, `open`, `require`)."""

    catalog: Catalog
    store: VectorStore
    embedder: Embedder
    locks: WriteLocks
    lexical_factory: Callable[[str], LexicalIndex]
    lexical_names: Callable[[], Sequence[str]]
    collection_options: CollectionOptions
    own_store: bool
    _open: dict[str, KnowledgeBase]
    _lock: threading.RLock

    if TYPE_CHECKING:
        def writing(self, name: str, wait: bool = False) -> AbstractContextManager[None]: ...
        def open(self, name: str) -> KnowledgeBase: ...
        def require(self, name: str) -> KbRecord: ...

    def model_check(self, record: KbRecord, *, dim_always: bool = True) -> ModelCheck:
        """The knowledge base's recorded model against the configured embedder. Reads the embedder's
        name and dimension only: neither loads a local model (`Embedder.dim` comes from its files;
        a remote embedder may ask its server once). The dimension is read only when the names are
        equal unless `dim_always` (for showing it), and then a failure to read it leaves it None."""
        name = self.embedder.name
        if record.embed_model == name:
            dim: int | None = self.embedder.dim
        elif dim_always:
            try:
                dim = self.embedder.dim
            except RagError as exc:  # the names differ: the check does not need it
                log.warning("could not read the dimension of embedding model %s: %s", name, exc.message)
                dim = None
        else:
            dim = None
        return ModelCheck(record.name, record.embed_model, record.dim, name, dim)

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
                with self.writing(owner):
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

    def reindex(self, name: str, *, batch: int = 256, wait: bool = False,
                progress: Callable[[int, int], None] | None = None) -> tuple[int, str]:
        """Re-embed every live chunk of `name` with the configured model into a new collection, under
        its write lock (chunk texts are read back from the old collection, nothing is re-parsed),
        then switch the knowledge base to it and drop the old collection. Queries keep working on
        the old collection until the switch. `progress(chunks embedded, chunks in all)` after each
        batch. The chunk count and the new collection."""
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
            done = 0
            if progress is not None:
                progress(0, len(ids))
            try:
                for chunks in iter_stored_chunks(store, record.collection, ids, batch):
                    store.upsert(new_collection, chunks, embedder.encode_corpus([c.match_text for c in chunks]))
                    lexical.add(chunks)
                    done += len(chunks)
                    if progress is not None:
                        progress(done, len(ids))
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
