"""BM25 stored in Qdrant as sparse vectors, for server mode: every API replica reads and writes the
same lexical index, so replicas keep no local state and any of them can answer or ingest.

Each point of a knowledge base's collection carries, next to its dense vector, a sparse vector
named `bm25` (the collection is created with `CollectionOptions(sparse=True)`, which gives it
Qdrant's IDF modifier). Term ids are a stable 31-bit hash of the `rag.text.tokenize` tokens
(`qdrant_store.term_id`); the tokens are exactly those `LocalBM25Index` indexes (`chunk_tokens`).

Scoring. Qdrant computes sum over shared terms of query value x document value x idf(term), with
idf = ln(1 + (N - n + 0.5) / (n + 0.5)) over the points that hold the sparse vector: the same
Lucene IDF as `LocalBM25Index`. Documents store the BM25-saturated term frequency
tf*(k1+1) / (tf + k1*(1 - b + b*|d|/avg_len)) and queries the count of each query term (1 for a
term used once; `LocalBM25Index` counts repeated query terms the same way), so the dot product is
BM25 with the same k1 and b. The approximations, all documented in docs/scaling.md:

- the average document length is an estimate fixed when the first batch is written: that batch's
  mean token count, kept in the collection's metadata (`bm25_avg_len`) so every replica and every
  later write uses the same value (stored weights cannot be rescaled when the corpus grows). It only
  moves the length normalisation; with the real average the scores equal `LocalBM25Index`'s.
  `avg_len=` fixes it explicitly; `rag reindex` re-estimates it in the new collection.
- a Qdrant server reads document frequencies from its sparse index, which may go on counting
  deleted points until the segment is optimised; local mode and `LocalBM25Index` use live counts.
- two tokens whose hashes collide share a dimension (31-bit hashes: about two colliding pairs in
  a 100k-word vocabulary).

Writes go after the dense upsert of the same points (`KnowledgeBase.write` and `reindex` do
that): `add` sets the sparse vector of existing points with `update_vectors`, so it never
touches their dense vector or payload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from rag.adapters.bm25 import chunk_tokens
from rag.adapters.filters import to_qdrant
from rag.adapters.qdrant_store import DEFAULT_AVG_LEN, SPARSE_NAME, sparse_document, sparse_query
from rag.errors import ConfigError, StoreError
from rag.fusion import Fused
from rag.ids import point_uuid
from rag.protocols import SparseVectorStore
from rag.text import tokenize
from rag.types import Chunk, Filter, ListHit, ScoredId

log = logging.getLogger(__name__)

AVG_LEN_KEY = "bm25_avg_len"  # collection metadata: the average length the stored weights assume


def check_parameters(k1: float, b: float, avg_len: float | None, batch_size: int) -> None:
    """ConfigError unless k1 >= 0, 0 <= b <= 1, avg_len (when fixed) > 0 and batch_size >= 1."""
    if k1 < 0 or not 0.0 <= b <= 1.0 or (avg_len is not None and avg_len <= 0):
        raise ConfigError(f"sparse BM25 needs k1 >= 0, 0 <= b <= 1 and avg_len > 0, got k1={k1} b={b} "
                          f"avg_len={avg_len}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")


def document_tokens(chunk: Chunk, stopwords: bool) -> list[str]:
    """The tokens a chunk's sparse vector counts: exactly those `LocalBM25Index` indexes."""
    return [t for tok in chunk_tokens(chunk, stopwords) for t in tok.split()]


def estimated_length(first_batch: Sequence[list[str]]) -> float | None:
    """The average length a collection's first batch of token lists gives (None: no batch yet)."""
    lengths = [len(t) for t in first_batch]
    if not lengths:
        return None
    return sum(lengths) / len(lengths) if sum(lengths) else DEFAULT_AVG_LEN


class QdrantSparseIndex:
    """`LexicalIndex` over the `bm25` sparse vectors of one collection of a `QdrantClientStore`.
    `k1` and `b` default to `LocalBM25Index`'s so that both rank alike."""

    def __init__(self, store: SparseVectorStore, collection: str, stopwords: bool = True, *, k1: float = 1.5, b: float = 0.75,
                 avg_len: float | None = None, batch_size: int = 256) -> None:
        if not isinstance(store, SparseVectorStore):
            raise ConfigError(f"lexical backend 'sparse' needs a qdrant-client store (local or server), "
                              f"got {type(store).__name__}; set RAG_LEXICAL_BACKEND=local", field="lexical_backend")
        check_parameters(k1, b, avg_len, batch_size)
        self.store = store
        self.collection = collection
        self.stopwords, self.k1, self.b, self.avg_len = stopwords, k1, b, avg_len
        self.batch_size = batch_size
        self._checked = False
        self._avg: float | None = avg_len

    # helpers -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        return self.store.client

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """The store's guard (its lock in local mode, API errors as StoreError), plus local mode's
        KeyError for a point that does not exist."""
        try:
            with self.store.guard(what):
                yield
        except KeyError as exc:
            raise StoreError(f"qdrant {what} on {self.collection!r}: no point {exc.args[0]!s}; the dense "
                             f"vector must be written before the lexical side") from exc

    def _has_sparse(self) -> bool:
        if self._checked:  # seen once: the sparse config of a collection does not change
            return True
        with self._call("get_collection"):
            if not self.client.collection_exists(self.collection):
                return False
            sparse_cfg = self.client.get_collection(self.collection).config.params.sparse_vectors or {}
        self._checked = SPARSE_NAME in sparse_cfg
        return self._checked

    def _require_sparse(self) -> None:
        if not self._has_sparse():
            raise StoreError(f"collection {self.collection!r} has no sparse vector {SPARSE_NAME!r} (it was created "
                             f"for a local BM25 index): run `rag reindex` to re-create it with the sparse backend")

    def _has_vector_filter(self, must: list[Any] | None = None) -> Any:
        from qdrant_client import models

        return models.Filter(must=[models.HasVectorCondition(has_vector=SPARSE_NAME), *(must or [])])

    def tokens(self, chunk: Chunk) -> list[str]:
        return document_tokens(chunk, self.stopwords)

    def document_vector(self, tokens: list[str], avg_len: float) -> tuple[list[int], list[float]]:
        """The sparse vector stored for a chunk's tokens (hashed term ids, BM25-saturated weights)."""
        return sparse_document(tokens, avg_len=avg_len, k1=self.k1, b=self.b)

    def average_length(self, first_batch: Sequence[list[str]] = ()) -> float:
        """The average document length used for writes: `avg_len` if given, else the collection's
        `bm25_avg_len` metadata, else the mean of `first_batch` (then stored in that metadata)."""
        if self._avg is not None:
            return self._avg
        with self._call("get_collection"):
            meta = self.client.get_collection(self.collection).config.metadata or {}
        value = meta.get(AVG_LEN_KEY)
        if not isinstance(value, (int, float)) or value <= 0:
            value = estimated_length(first_batch)
            if value is None:  # nothing written yet and nothing to estimate from
                return DEFAULT_AVG_LEN
            with self._call("update_collection"):
                self.client.update_collection(self.collection, metadata={AVG_LEN_KEY: value})
            log.info("collection %s: BM25 average length estimated at %.1f tokens from %d chunks", self.collection,
                     value, len(first_batch))
        self._avg = float(value)
        return self._avg

    def query_vector(self, query: str) -> tuple[list[int], list[float]]:
        return sparse_query(tokenize(query, stopwords=self.stopwords))

    # writes --------------------------------------------------------------------------------

    def add(self, chunks: Sequence[Chunk]) -> None:
        """Set the sparse vector of points the vector store already holds (StoreError otherwise)."""
        if not chunks:
            return
        from qdrant_client import models

        self._require_sparse()
        latest = {c.id: c for c in chunks}  # the last occurrence of an id wins, as in LocalBM25Index
        items = list(latest.values())
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            tokens = [self.tokens(c) for c in batch]
            avg_len = self.average_length(tokens)
            points = []
            for chunk, toks in zip(batch, tokens, strict=True):
                indices, values = self.document_vector(toks, avg_len)
                points.append(models.PointVectors(id=point_uuid(chunk.id), vector={
                    SPARSE_NAME: models.SparseVector(indices=indices, values=values)}))
            with self._call("update_vectors"):
                self.client.update_vectors(self.collection, points=points, wait=True)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Remove the sparse vector of these chunks; points that are already gone are skipped."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids or not self._has_sparse():
            return
        from qdrant_client import models

        for start in range(0, len(ids), self.batch_size):
            has_id = models.HasIdCondition(has_id=[point_uuid(c) for c in ids[start:start + self.batch_size]])
            with self._call("delete_vectors"):
                self.client.delete_vectors(self.collection, vectors=[SPARSE_NAME], wait=True,
                                           points=models.FilterSelector(filter=models.Filter(must=[has_id])))

    def replace(self, delete_ids: Sequence[str], add_chunks: Sequence[Chunk]) -> None:
        """Delete some chunks' lexical entries and add others (a re-ingested document). Not atomic
        across the two calls, but idempotent: repeating it gives the same state."""
        keep = {c.id for c in add_chunks}
        self.delete([c for c in delete_ids if c not in keep])
        self.add(add_chunks)

    def drop(self) -> None:
        """Remove every sparse vector of the collection (the collection itself is the store's)."""
        self._checked = False  # look again: the store may have dropped the collection already
        if not self._has_sparse():
            return
        from qdrant_client import models

        with self._call("delete_vectors"):
            self.client.delete_vectors(self.collection, vectors=[SPARSE_NAME], wait=True,
                                       points=models.FilterSelector(filter=self._has_vector_filter()))
        if self.avg_len is None:  # the next first batch estimates the average again
            with self._call("update_collection"):
                self.client.update_collection(self.collection, metadata={AVG_LEN_KEY: None})
            self._avg = None
        log.info("dropped the sparse BM25 vectors of collection %s", self.collection)

    def rebuild(self, chunks: Sequence[Chunk]) -> None:
        """Write the sparse vectors of `chunks` afresh (the average length is estimated again
        unless `avg_len` was given); the points must already hold their dense vectors."""
        self.drop()
        self.add(chunks)

    @property
    def stale(self) -> bool:
        """Never: the weights carry no tokenizer version (`rag reindex` re-creates them)."""
        return False

    # reads ---------------------------------------------------------------------------------

    def search(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        indices, values = self.query_vector(query)
        return self.search_vector(indices, values, limit, flt)

    def search_tokens(self, tokens: Sequence[str], limit: int, flt: Filter | None = None) -> list[ScoredId]:
        indices, values = sparse_query(list(tokens))
        return self.search_vector(indices, values, limit, flt)

    def search_vector(self, indices: Sequence[int], values: Sequence[float], limit: int,
                      flt: Filter | None = None) -> list[ScoredId]:
        if limit <= 0 or not indices:
            return []
        hits = self.store.search_sparse(self.collection, indices, values, limit, flt)
        return [h for h in hits if h.score > 0]  # like LocalBM25Index: only chunks sharing a term

    def ids(self) -> set[str]:
        if not self._has_sparse():
            return set()
        out: set[str] = set()
        offset = None
        while True:
            with self._call("scroll"):
                records, offset = self.client.scroll(self.collection, scroll_filter=self._has_vector_filter(),
                                                     limit=1024, offset=offset, with_payload=["chunk_id"],
                                                     with_vectors=False)
            out.update(r.payload["chunk_id"] for r in records)
            if offset is None:
                return out

    def count(self) -> int:
        if not self._has_sparse():
            return 0
        with self._call("count"):
            return int(self.client.count(self.collection, count_filter=self._has_vector_filter(), exact=True).count)

    def close(self) -> None:
        """Nothing to release: the store owns the client."""


def server_rrf(index: QdrantSparseIndex, dense: np.ndarray, query: str, limit: int, per_list: int,
               flt: Filter | None = None, k: int = 60) -> list[Fused]:
    """Dense + BM25 fused by Qdrant itself (one request). Qdrant scores 1/(k' + pos) with pos from 0,
    so `Rrf(k=k + 1)` equals `rag.fusion.rrf(k=k)`'s 1/(k + rank) with rank from 1 (equal weights).
    The pipeline fuses client-side (it also fuses query variants and collapses extra vectors);
    this is the server-side check that both give the same ranking."""
    from qdrant_client import models

    qflt = to_qdrant(flt)
    indices, values = index.query_vector(query)
    prefetch = [models.Prefetch(query=np.asarray(dense, dtype=np.float32).reshape(-1).tolist(), limit=per_list,
                                filter=qflt)]
    if indices:
        prefetch.append(models.Prefetch(query=models.SparseVector(indices=indices, values=values), using=SPARSE_NAME,
                                        limit=per_list, filter=qflt))
    with index._call("query_points"):
        points = index.client.query_points(index.collection, prefetch=prefetch, limit=limit,
                                           query=models.RrfQuery(rrf=models.Rrf(k=k + 1)),
                                           with_payload=["chunk_id"]).points
    return [Fused(p.payload["chunk_id"], float(p.score), [ListHit("qdrant_rrf", "", i + 1, float(p.score))])
            for i, p in enumerate(points)]
