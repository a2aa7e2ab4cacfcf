"""BM25 in PostgreSQL as pgvector `sparsevec`s, next to the dense vectors of a `PgVectorStore`
collection: the pgvector counterpart of `QdrantSparseIndex`, with the same tokens, term hashing and
weights (`sparse_lexical.document_tokens`, `qdrant_store.sparse_document` / `sparse_query`), so it
ranks like the Qdrant server mode and like `LocalBM25Index`.

Each row of a collection created with `CollectionOptions(sparse=True)` has `bm25 sparsevec` (the
BM25-saturated term frequencies tf*(k1+1) / (tf + k1*(1 - b + b*|d|/avg_len))) and `bm25_terms`
(its term ids, GIN-indexed). The IDF, which Qdrant applies server-side, is computed in SQL at query
time from live counts (`PgVectorStore.search_sparse`): idf = ln(1 + (N - n + 0.5) / (n + 0.5)), N the
rows holding a BM25 vector, n those holding the term. No document-frequency table to keep in step:
deleted rows stop counting at once (a Qdrant server may count them until it optimises a segment).

Differences from the Qdrant sparse mode, both documented in docs/scaling.md:

- hash space: pgvector's sparsevec has at most 10^9 dimensions, so the 31-bit term ids are taken
  modulo 10^9: about five colliding pairs in a 100k-word vocabulary instead of about two. Two terms
  of one chunk that meet add their weights (Qdrant would saturate their summed counts).
- a sparsevec holds at most 16,000 non-zero elements: a chunk with more distinct terms is refused
  (InvalidRequest); the default 800-character chunks have a few hundred.

The average length is estimated from the first batch and kept in the collection's registry metadata
(`bm25_avg_len`; the first writer wins, so concurrent replicas agree). `replace` and `rebuild` run in
one transaction: unlike Qdrant they are atomic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rag.adapters.pgvector_store import PgVectorStore, sparse_literal
from rag.adapters.qdrant_store import DEFAULT_AVG_LEN, sparse_document, sparse_query
from rag.adapters.sparse_lexical import AVG_LEN_KEY, check_parameters, document_tokens, estimated_length
from rag.errors import ConfigError, NotFound, StoreError
from rag.text import tokenize
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)


class PgSparseIndex:
    """`LexicalIndex` over the `bm25` sparsevecs of one collection of a `PgVectorStore`. `k1` and
    `b` default to `LocalBM25Index`'s so that both rank alike."""

    def __init__(self, store: PgVectorStore, collection: str, stopwords: bool = True, *, k1: float = 1.5,
                 b: float = 0.75, avg_len: float | None = None, batch_size: int = 256) -> None:
        if not isinstance(store, PgVectorStore):
            raise ConfigError(f"lexical backend 'pgvector' needs the pgvector store, got {type(store).__name__}; "
                              f"set RAG_LEXICAL_BACKEND=local", field="lexical_backend")
        check_parameters(k1, b, avg_len, batch_size)
        self.store = store
        self.collection = collection
        self.stopwords, self.k1, self.b, self.avg_len = stopwords, k1, b, avg_len
        self.batch_size = batch_size
        self._avg: float | None = avg_len

    def _table(self):
        """The collection's table when it holds BM25 vectors, None when the collection is gone."""
        info = self.store.find(self.collection)
        if info is None:
            return None
        if not info.sparse:
            raise StoreError(f"collection {self.collection!r} has no BM25 sparse vectors (it was created for a "
                             f"local BM25 index): run `rag reindex` to re-create it with the pgvector backend")
        return info.table

    def _has_sparse(self) -> bool:
        info = self.store.find(self.collection)
        return info is not None and info.sparse

    def average_length(self, first_batch: Sequence[list[str]] = ()) -> float:
        """`avg_len` if given, else the collection's `bm25_avg_len` metadata, else the mean of
        `first_batch` (then stored; another writer's earlier estimate wins)."""
        if self._avg is not None:
            return self._avg
        value = self.store.metadata(self.collection).get(AVG_LEN_KEY)
        if not isinstance(value, (int, float)) or value <= 0:
            value = estimated_length(first_batch)
            if value is None:  # nothing written yet and nothing to estimate from
                return DEFAULT_AVG_LEN
            value = self.store.set_metadata(self.collection, AVG_LEN_KEY, value, if_missing=True)
            log.info("collection %s: BM25 average length estimated at %.1f tokens from %d chunks", self.collection,
                     value, len(first_batch))
        self._avg = float(value)
        return self._avg

    # writes --------------------------------------------------------------------------------

    def add(self, chunks: Sequence[Chunk]) -> None:
        """Set the BM25 vector of rows the vector store already holds (StoreError otherwise, and
        nothing is written), in one transaction."""
        if not chunks:
            return
        from psycopg import sql

        table = self._table()
        if table is None:
            raise StoreError(f"collection {self.collection!r} does not exist: the dense vectors must be written "
                             f"before the lexical side")
        items = list({c.id: c for c in chunks}.values())  # the last occurrence of an id wins
        with self.store.transaction("bm25 add", self.collection) as conn, conn.cursor() as cur:
            for start in range(0, len(items), self.batch_size):
                batch = items[start:start + self.batch_size]
                ids = [c.id for c in batch]
                found = {r[0] for r in cur.execute(sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(table),
                                                   [ids])}
                missing = [i for i in ids if i not in found]
                if missing:
                    raise StoreError(f"bm25 add on {self.collection!r}: no point {missing[0]!r}; the dense vector "
                                     f"must be written before the lexical side")
                tokens = [document_tokens(c, self.stopwords) for c in batch]
                avg_len = self.average_length(tokens)
                rows = []
                for chunk, toks in zip(batch, tokens, strict=True):
                    literal, terms = sparse_literal(*sparse_document(toks, avg_len=avg_len, k1=self.k1, b=self.b))
                    rows.append([literal, terms, chunk.id])
                cur.executemany(sql.SQL("UPDATE {} SET bm25 = %s::sparsevec, bm25_terms = %s::integer[] "
                                        "WHERE id = %s").format(table), rows)

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Remove the BM25 vector of these chunks; rows that are already gone are skipped."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids or not self._has_sparse():
            return
        from psycopg import sql

        table = self._table()
        with self.store.transaction("bm25 delete", self.collection) as conn:
            conn.execute(sql.SQL("UPDATE {} SET bm25 = NULL, bm25_terms = NULL "
                                 "WHERE id = ANY(%s) AND bm25 IS NOT NULL").format(table), [ids])

    def replace(self, delete_ids: Sequence[str], add_chunks: Sequence[Chunk]) -> None:
        """Delete some chunks' BM25 vectors and add others (a re-ingested document), atomically."""
        keep = {c.id for c in add_chunks}
        with self.store.transaction("bm25 replace", self.collection):
            self.delete([c for c in delete_ids if c not in keep])
            self.add(add_chunks)

    def drop(self) -> None:
        """Remove every BM25 vector of the collection (the collection itself is the store's)."""
        if not self._has_sparse():
            return
        from psycopg import sql

        table = self._table()
        try:
            with self.store.transaction("bm25 drop", self.collection) as conn:
                conn.execute(sql.SQL("UPDATE {} SET bm25 = NULL, bm25_terms = NULL "
                                     "WHERE bm25 IS NOT NULL").format(table))
            if self.avg_len is None:  # the next first batch estimates the average again
                self.store.set_metadata(self.collection, AVG_LEN_KEY, None)
                self._avg = None
        except NotFound:  # dropped meanwhile: nothing left to remove
            return
        log.info("dropped the BM25 vectors of collection %s", self.collection)

    def rebuild(self, chunks: Sequence[Chunk]) -> None:
        """Write the BM25 vectors of `chunks` afresh, in one transaction (the average length is
        estimated again unless `avg_len` was given); the rows must already hold their dense vectors."""
        with self.store.transaction("bm25 rebuild", self.collection):
            self.drop()
            self.add(chunks)

    @property
    def stale(self) -> bool:
        """Never: the weights carry no tokenizer version (`rag reindex` re-creates them)."""
        return False

    # reads ---------------------------------------------------------------------------------

    def search(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        indices, values = sparse_query(tokenize(query, stopwords=self.stopwords))
        if limit <= 0 or not indices:
            return []
        hits = self.store.search_sparse(self.collection, indices, values, limit, flt)
        return [h for h in hits if h.score > 0]  # like LocalBM25Index: only chunks sharing a term

    def ids(self) -> set[str]:
        if not self._has_sparse():
            return set()
        from psycopg import sql

        with self.store.transaction("bm25 ids", self.collection) as conn:
            return {r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} WHERE bm25 IS NOT NULL").format(
                self._table()))}

    def count(self) -> int:
        if not self._has_sparse():
            return 0
        from psycopg import sql

        with self.store.transaction("bm25 count", self.collection) as conn:
            return int(conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE bm25 IS NOT NULL").format(
                self._table())).fetchone()[0])

    def close(self) -> None:
        """Nothing to release: the store owns the connection."""
