"""Vector store on PostgreSQL with pgvector, for teams that run PostgreSQL already (Qdrant stays the
default and the recommendation for large collections: docs/scaling.md).

Layout, all in one schema (`rag_vectors` by default) so that nothing clashes with other tables of
the database (the catalog may share it):

- `_collections`: one row per collection: its name, its table, the vector dimension, whether it
  holds BM25 sparse vectors, and a jsonb `metadata` (`bm25_avg_len`, see `pgvector_lexical`);
- one table per collection, named after it (quoted with `psycopg.sql.Identifier`, so `my.kb-1`
  and `kb__v2` are fine; a name over 48 bytes, or one starting with `_`, gets a shortened name
  with a hash, since PostgreSQL cuts identifiers at 63 bytes): `id` (the chunk id, primary key),
  `embedding vector(dim)` with an HNSW index (cosine: scores are 1 - cosine distance, as in
  Qdrant), `payload jsonb` (`Chunk.payload()`) with a GIN index (jsonb_path_ops) for the keyword
  filters, a btree per float field (`filters.FLOAT_FIELDS`) for ranges and one per one-string field
  (`filters.SCALAR_FIELDS`: source, doc_id) for any-of lists; with sparse vectors
  also `bm25 sparsevec` and `bm25_terms int4[]` (GIN), written by `PgSparseIndex`.

Searches set `hnsw.ef_search` per query (the store's `hnsw_ef`, at least `limit`, at most
pgvector's 1000) and `hnsw.iterative_scan = strict_order`, so a filtered search still returns
`limit` hits, in distance order, when the filter drops most of the first candidates. Its recall is
below Qdrant's filter-aware graph (docs/scaling.md has the numbers); the planner answers a
selective filter exactly from the payload index when it estimates that cheaper.

Connections are lent to the store's threads from a pool (`rag.pool.ConnectionPool`, up to
`pool_size`: RAG_PG_POOL_SIZE), in the order they asked: a dense search holds one for about a
millisecond (benchmarks/pgvector_store.py), but a BM25 search over a large knowledge base holds it
for a few hundred (docs/scaling.md), and concurrent queries should not queue behind it. A
transaction's nested calls (a BM25 rebuild's) share its connection. A connection that broke (server
restart) is replaced. The URL's password never appears in a message (`rag.redact`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.adapters.filters import FLOAT_FIELDS, SCALAR_FIELDS, pg_float, to_pg
from rag.adapters.qdrant_store import check_batch
from rag.errors import EmbeddingMismatch, InvalidRequest, NotFound, StoreError
from rag.pool import ConnectionPool
from rag.protocols import CollectionOptions, RecoveryReport
from rag.redact import redact_url, scrub
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)

SCHEMA = "rag_vectors"
REGISTRY = "_collections"
SPARSE_DIM = 1_000_000_000  # pgvector's largest sparsevec dimension (SPARSEVEC_MAX_DIM)
SPARSE_MAX_NNZ = 16_000  # pgvector's most non-zero elements of a sparsevec (SPARSEVEC_MAX_NNZ)
HNSW_MAX_DIM = 2000  # pgvector indexes `vector` columns of up to 2,000 dimensions
EF_SEARCH_MAX = 1000  # pgvector's largest hnsw.ef_search
_TABLE_MAX_BYTES = 48  # leaves room for index suffixes under PostgreSQL's 63-byte identifiers


def table_name(collection: str) -> str:
    """The table of a collection: its name when short enough, else a prefix and a hash."""
    raw = collection.encode("utf-8")
    if len(raw) <= _TABLE_MAX_BYTES and not collection.startswith("_"):
        return collection
    digest = hashlib.blake2b(raw, digest_size=5).hexdigest()
    return raw[:36].decode("utf-8", "ignore") + "_" + digest


def fold_terms(indices: Sequence[int], values: Sequence[float]) -> dict[int, float]:
    """A term vector in pgvector's sparse space: term ids (31-bit, `qdrant_store.term_id`) are taken
    modulo SPARSE_DIM, and two that meet there add up (see `pgvector_lexical`)."""
    merged: dict[int, float] = defaultdict(float)
    for index, value in zip(indices, values, strict=True):
        merged[int(index) % SPARSE_DIM] += float(value)
    return merged


def sparse_literal(indices: Sequence[int], values: Sequence[float]) -> tuple[str, list[int]]:
    """The sparsevec literal of a document's term vector (`fold_terms`) and its term ids."""
    merged = fold_terms(indices, values)
    if len(merged) > SPARSE_MAX_NNZ:
        raise InvalidRequest(f"a sparse vector has {len(merged)} distinct terms, pgvector stores at most "
                             f"{SPARSE_MAX_NNZ}: use smaller chunks")
    terms = sorted(merged)
    body = ",".join(f"{t + 1}:{merged[t]!r}" for t in terms)  # the text form counts from 1
    return f"{{{body}}}/{SPARSE_DIM}", terms


@dataclass(frozen=True)
class _Info:
    table: Any  # sql.Identifier(schema, table)
    name: str  # the table's own name (index names derive from it)
    dim: int
    sparse: bool


class PgVectorStore:
    """`VectorStore` on PostgreSQL + pgvector (`CREATE EXTENSION vector` is run if missing, which
    needs the right to create it). `hnsw_m` / `hnsw_ef_construct` apply to new collections
    (`CollectionOptions` may override them); the other collection options (on-disk storage,
    quantization, shards, replicas) are Qdrant's and ignored here."""

    def __init__(self, url: str, *, schema: str = SCHEMA, hnsw_m: int = 16, hnsw_ef_construct: int = 100,
                 hnsw_ef: int | None = None, batch_size: int = 256, connect_timeout: int = 10,
                 pool_size: int = 4) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.url = url
        self.schema = schema
        self.hnsw_m, self.hnsw_ef_construct, self.hnsw_ef = hnsw_m, hnsw_ef_construct, hnsw_ef
        self.batch_size = batch_size
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self._lock = threading.Lock()  # guards the making of the pool
        self._pool: ConnectionPool | None = None
        self._ready = False
        self._infos: dict[str, _Info] = {}

    def __repr__(self) -> str:
        return f"PgVectorStore({redact_url(self.url)!r}, schema={self.schema!r})"

    # connection ----------------------------------------------------------------------------

    def _connections(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                import psycopg

                self._pool = ConnectionPool(
                    lambda: psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout),
                    self.pool_size, broken=lambda conn: conn.closed or conn.broken)
            return self._pool

    @contextmanager
    def transaction(self, what: str, name: str | None = None) -> Iterator[Any]:
        """One transaction on a connection this thread keeps for it (a nested call: a savepoint in
        the outer one): PostgreSQL errors become StoreError (a table dropped meanwhile: NotFound for
        collection `name`), URL password scrubbed."""
        import psycopg

        try:
            with self._connections().holding() as (conn, _), conn.transaction():
                yield conn
        except psycopg.errors.UndefinedTable as exc:
            if name is None:
                raise StoreError(f"postgresql {what} failed: {scrub(str(exc), self.url)}") from None
            self._infos.pop(name, None)
            raise NotFound(f"collection {name!r} does not exist", field="kb") from None
        except psycopg.Error as exc:
            raise StoreError(f"postgresql {what} failed: {scrub(str(exc), self.url)}") from None

    def _registry(self) -> Any:
        from psycopg import sql

        return sql.Identifier(self.schema, REGISTRY)

    def _prepare(self) -> None:
        """The extension, the schema and the registry, once per store (idempotent, race-safe)."""
        if self._ready:
            return
        from psycopg import sql

        with self.transaction("prepare") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"rag-vectors:{self.schema}"])
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, tbl text NOT NULL UNIQUE, "
                                 "dim integer NOT NULL, sparse boolean NOT NULL, "
                                 "metadata jsonb NOT NULL DEFAULT '{{}}')").format(self._registry()))
        self._ready = True

    # collections ---------------------------------------------------------------------------

    def find(self, name: str) -> _Info | None:
        """The table, dimension and sparse flag of collection `name`, None when it does not exist."""
        from psycopg import sql

        if name in self._infos:
            return self._infos[name]
        self._prepare()
        with self.transaction("collection lookup") as conn:
            row = conn.execute(sql.SQL("SELECT tbl, dim, sparse FROM {} WHERE name = %s").format(self._registry()),
                               [name]).fetchone()
        if row is None:
            return None
        info = _Info(sql.Identifier(self.schema, row[0]), row[0], int(row[1]), bool(row[2]))
        self._infos[name] = info
        return info

    def info(self, name: str) -> _Info:
        """The table, dimension and sparse flag of collection `name` (NotFound when missing)."""
        info = self.find(name)
        if info is None:
            raise NotFound(f"collection {name!r} does not exist", field="kb")
        return info

    def collection_exists(self, name: str) -> bool:
        self._infos.pop(name, None)  # another process may have dropped it: ask the database
        return self.find(name) is not None

    def collections(self) -> list[str]:
        from psycopg import sql

        self._prepare()
        with self.transaction("collections") as conn:
            rows = conn.execute(sql.SQL("SELECT name FROM {}").format(self._registry())).fetchall()
        return sorted(r[0] for r in rows)  # Python's order, not the database collation's

    def ensure_collection(self, name: str, dim: int, options: CollectionOptions | None = None) -> None:
        """Create the collection's table and indexes (cosine HNSW, payload GIN, float btrees; with
        `options.sparse` the BM25 columns), or check the existing one's dimension."""
        from psycopg import sql

        options = options or CollectionOptions()
        if dim > HNSW_MAX_DIM:
            raise EmbeddingMismatch(f"pgvector indexes vectors of up to {HNSW_MAX_DIM} dimensions, the embedder "
                                    f"gives {dim}: use Qdrant for this model")
        self._prepare()
        with self.transaction("create collection") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"rag-vectors:{self.schema}"])
            row = conn.execute(sql.SQL("SELECT dim, sparse FROM {} WHERE name = %s").format(self._registry()),
                               [name]).fetchone()
            if row is None:
                self._create(conn, name, dim, options)
        if row is not None:
            if int(row[0]) != dim:
                raise EmbeddingMismatch(f"collection {name!r} holds {row[0]}-d vectors, the embedder gives {dim}-d")
            if options.sparse and not row[1]:
                raise StoreError(f"collection {name!r} was created without sparse vectors: re-create it")
            return
        self._infos.pop(name, None)
        log.info("created pgvector collection %s (dim=%d, sparse=%s)", name, dim, options.sparse)

    def _create(self, conn: Any, name: str, dim: int, options: CollectionOptions) -> None:
        from psycopg import sql

        tbl = table_name(name)
        table = sql.Identifier(self.schema, tbl)
        m = options.hnsw_m or self.hnsw_m
        ef_construct = max(options.hnsw_ef_construct or self.hnsw_ef_construct, 2 * m)  # pgvector's minimum
        sparse_columns = sql.SQL(", bm25 sparsevec({}), bm25_terms integer[]").format(sql.Literal(SPARSE_DIM))
        conn.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, embedding vector({}) NOT NULL, "
                             "payload jsonb NOT NULL{})").format(
            table, sql.Literal(dim), sparse_columns if options.sparse else sql.SQL("")))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) "
                             "WITH (m = {}, ef_construction = {})").format(
            sql.Identifier(f"{tbl}_hnsw"), table, sql.Literal(m), sql.Literal(ef_construct)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (payload jsonb_path_ops)").format(
            sql.Identifier(f"{tbl}_payload"), table))
        for field in FLOAT_FIELDS:
            conn.execute(sql.SQL("CREATE INDEX {} ON {} (({}))").format(
                sql.Identifier(f"{tbl}_{field}"[:63]), table, pg_float(field)))
        for field in SCALAR_FIELDS:
            conn.execute(sql.SQL("CREATE INDEX {} ON {} ((payload ->> {}))").format(
                sql.Identifier(f"{tbl}_{field}"[:63]), table, sql.Literal(field)))
        if options.sparse:
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (bm25_terms)").format(
                sql.Identifier(f"{tbl}_terms"), table))
        conn.execute(sql.SQL("INSERT INTO {} (name, tbl, dim, sparse) VALUES (%s, %s, %s, %s)").format(
            self._registry()), [name, tbl, dim, options.sparse])

    def drop_collection(self, name: str) -> None:
        from psycopg import sql

        self._prepare()
        with self.transaction("drop collection") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"rag-vectors:{self.schema}"])
            row = conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s RETURNING tbl").format(self._registry()),
                               [name]).fetchone()
            if row is not None:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.schema, row[0])))
        self._infos.pop(name, None)

    # metadata (the lexical index keeps its average length here) -------------------------------

    def metadata(self, name: str) -> dict[str, Any]:
        from psycopg import sql

        self.info(name)
        with self.transaction("metadata", name) as conn:
            row = conn.execute(sql.SQL("SELECT metadata FROM {} WHERE name = %s").format(self._registry()),
                               [name]).fetchone()
        if row is None:
            raise NotFound(f"collection {name!r} does not exist", field="kb")
        return dict(row[0])

    def set_metadata(self, name: str, key: str, value: Any, *, if_missing: bool = False) -> Any:
        """Set (or with `if_missing`, set only when absent: the first writer wins) one metadata
        key; None removes it. The value now stored."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        self.info(name)
        registry = self._registry()
        with self.transaction("metadata", name) as conn:
            if value is None:
                conn.execute(sql.SQL("UPDATE {} SET metadata = metadata - %s WHERE name = %s").format(registry),
                             [key, name])
                return None
            guard = sql.SQL(" AND NOT metadata ? %s") if if_missing else sql.SQL("")
            conn.execute(sql.SQL("UPDATE {} SET metadata = metadata || %s WHERE name = %s{}").format(registry, guard),
                         [Jsonb({key: value}), name, *([key] if if_missing else [])])
            row = conn.execute(sql.SQL("SELECT metadata -> %s FROM {} WHERE name = %s").format(registry),
                               [key, name]).fetchone()
        return row[0] if row else None

    # points --------------------------------------------------------------------------------

    def upsert(self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray,
               sparse_vectors: Sequence[tuple[Sequence[int], Sequence[float]]] | None = None) -> None:
        """Insert or replace whole points, in one transaction. In a collection with sparse vectors
        a point written without one loses its old one (as in Qdrant): `PgSparseIndex.add` sets it."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        info = self.info(name)
        vectors = check_batch(chunks, vectors, info.dim)
        if sparse_vectors is not None:
            if not info.sparse:
                raise InvalidRequest(f"collection {name!r} has no sparse vectors")
            if len(sparse_vectors) != len(chunks):
                raise InvalidRequest(f"expected {len(chunks)} sparse vectors, got {len(sparse_vectors)}")
        columns, values = "id, embedding, payload", "%s, %b::real[]::vector, %s"
        if info.sparse:
            columns, values = columns + ", bm25, bm25_terms", values + ", %s::sparsevec, %s::integer[]"
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns.split(", ")[1:])
        query = sql.SQL("INSERT INTO {} (" + columns + ") VALUES (" + values + ") ON CONFLICT (id) DO UPDATE SET "
                        + updates).format(info.table)
        rows: list[list[Any]] = []
        for i, chunk in enumerate(chunks):
            row: list[Any] = [chunk.id, vectors[i].tolist(), Jsonb(chunk.payload())]
            if info.sparse:
                row.extend(sparse_literal(*sparse_vectors[i]) if sparse_vectors is not None else (None, None))
            rows.append(row)
        with self.transaction("upsert", name) as conn, conn.cursor() as cur:
            for start in range(0, len(rows), self.batch_size):
                cur.executemany(query, rows[start:start + self.batch_size])

    def delete(self, name: str, chunk_ids: Sequence[str]) -> None:
        from psycopg import sql

        info = self.info(name)
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return
        with self.transaction("delete", name) as conn:
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(info.table), [ids])

    def _search_settings(self, conn: Any, limit: int, exact: bool) -> None:
        ef = min(max(self.hnsw_ef or 40, limit), EF_SEARCH_MAX)  # 40: pgvector's default
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                     "set_config('hnsw.iterative_scan', 'strict_order', true)", [str(ef)])
        if exact:  # no HNSW: a scan of the (filtered) rows, sorted by distance
            conn.execute("SELECT set_config('enable_indexscan', 'off', true)")

    def search(self, name: str, vector: np.ndarray, limit: int, flt: Filter | None = None, *,
               exact: bool = False) -> list[ScoredId]:
        from psycopg import sql

        info = self.info(name)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != info.dim:
            raise EmbeddingMismatch(f"query vector has dimension {query.shape[0]}, the collection has {info.dim}")
        if limit <= 0:
            return []
        where, params = to_pg(flt)
        q = query.tolist()
        statement = sql.SQL("SELECT id, 1 - (embedding <=> %b::real[]::vector) FROM {} WHERE {} "
                            "ORDER BY embedding <=> %b::real[]::vector LIMIT %s").format(info.table, where)
        with self.transaction("search", name) as conn:
            self._search_settings(conn, limit, exact)
            rows = conn.execute(statement, [q, *params, q, limit]).fetchall()
        return [ScoredId(r[0], float(r[1])) for r in rows]

    def search_sparse(self, name: str, indices: Sequence[int], values: Sequence[float], limit: int,
                      flt: Filter | None = None) -> list[ScoredId]:
        """BM25 the way Qdrant's IDF modifier computes it, in SQL: the query vector's values are
        multiplied by idf = ln(1 + (N - n + 0.5) / (n + 0.5)), N the points holding a sparse vector and
        n those holding the term (live counts, from the GIN index on `bm25_terms`), then the inner
        product with each point sharing a term."""
        from psycopg import sql

        info = self.info(name)
        if not info.sparse:
            raise InvalidRequest(f"collection {name!r} has no sparse vectors")
        if limit <= 0 or not indices:
            return []
        merged = fold_terms(indices, values)
        terms = sorted(merged)
        where, params = to_pg(flt)
        statement = sql.SQL(
            "WITH q AS (SELECT * FROM unnest(%s::integer[], %s::float8[]) AS q(term, value)), "
            "n AS (SELECT count(*)::float8 AS n FROM {t} WHERE bm25 IS NOT NULL), "
            "w AS (SELECT q.term, q.value * ln(1 + (n.n - d.df + 0.5) / (d.df + 0.5)) AS w FROM q, n, "
            "LATERAL (SELECT count(*)::float8 AS df FROM {t} WHERE bm25_terms @> ARRAY[q.term]) d), "
            "v AS (SELECT ('{{' || string_agg((term + 1)::text || ':' || w::text, ',' ORDER BY term) || '}}/' "
            "|| {dim})::sparsevec AS v FROM w) "
            "SELECT id, -(bm25 <#> v.v) AS score FROM {t}, v WHERE bm25_terms && %s::integer[] AND {where} "
            "ORDER BY bm25 <#> v.v LIMIT %s").format(t=info.table, dim=sql.Literal(SPARSE_DIM), where=where)
        with self.transaction("sparse search", name) as conn:
            rows = conn.execute(statement, [terms, [merged[t] for t in terms], terms, *params, limit]).fetchall()
        return [ScoredId(r[0], float(r[1])) for r in rows]

    def ids(self, name: str) -> set[str]:
        from psycopg import sql

        info = self.info(name)
        with self.transaction("ids", name) as conn:
            return {r[0] for r in conn.execute(sql.SQL("SELECT id FROM {}").format(info.table))}

    def get_payloads(self, name: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given chunks (those that exist), keyed by chunk id."""
        from psycopg import sql

        info = self.info(name)
        ids = list(dict.fromkeys(chunk_ids))
        out: dict[str, dict[str, Any]] = {}
        with self.transaction("get payloads", name) as conn:
            for start in range(0, len(ids), self.batch_size):
                rows = conn.execute(sql.SQL("SELECT id, payload FROM {} WHERE id = ANY(%s)").format(info.table),
                                    [ids[start:start + self.batch_size]])
                out.update((r[0], dict(r[1])) for r in rows)
        return out

    def count(self, name: str) -> int:
        from psycopg import sql

        info = self.info(name)
        with self.transaction("count", name) as conn:
            return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(info.table)).fetchone()[0])

    def optimize(self, name: str, min_unindexed: int = 0) -> bool:
        """Nothing to do: PostgreSQL adds every written vector to the HNSW index in the same transaction."""
        self.info(name)
        return False

    def recover(self, name: str) -> RecoveryReport:
        """Nothing to recover here: PostgreSQL replays its own WAL after a crash, and a transaction
        is written whole or not at all (NotFound for an unknown collection)."""
        self.info(name)
        return RecoveryReport(name)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self._infos.clear()
        self._ready = False
