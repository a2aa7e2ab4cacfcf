"""Vector store on qdrant-client: the same code for a Qdrant server, an on-disk local store and
an in-memory one; only the client differs.

Local mode (`QdrantClientStore.local/.memory`) is brute force in Python (no HNSW, payload
indexes are no-ops): fine for tests and small knowledge bases; use `EdgeStore` for a real
embedded engine, or a server.

Optional server-side BM25 ("sparse"): a sparse vector named `bm25` with Qdrant's IDF modifier.
Qdrant multiplies query value x document value x idf(term) with idf = ln(1 + (N - n + 0.5) /
(n + 0.5)), so documents carry the BM25-saturated term frequency (`sparse_document`) and queries
carry 1 per query term (`sparse_query`). The length normalisation uses a fixed `avg_len`
(the corpus average is unknown when a point is written); see `sparse_document`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from rag.adapters.filters import FLOAT_FIELDS, KEYWORD_FIELDS, to_qdrant
from rag.errors import EmbeddingMismatch, InvalidRequest, NotFound, StoreError
from rag.ids import point_uuid
from rag.protocols import CollectionOptions, RecoveryReport
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)

SPARSE_NAME = "bm25"
DEFAULT_AVG_LEN = 150.0  # tokens per chunk, what the default chunker produces


def term_id(token: str) -> int:
    """A stable sparse dimension for a token: blake2b, first 4 bytes, masked to 31 bits."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def sparse_document(tokens: Sequence[str], avg_len: float = DEFAULT_AVG_LEN, k1: float = 1.2,
                    b: float = 0.75) -> tuple[list[int], list[float]]:
    """BM25 document weights tf*(k1+1) / (tf + k1*(1 - b + b*len/avg_len)) per hashed term.
    With the collection's IDF modifier, query . document equals BM25 (with that fixed avg_len)."""
    counts = Counter(term_id(t) for t in tokens)
    norm = k1 * (1.0 - b + b * len(tokens) / max(avg_len, 1e-9))
    indices = sorted(counts)
    return indices, [counts[i] * (k1 + 1.0) / (counts[i] + norm) for i in indices]


def sparse_query(tokens: Sequence[str]) -> tuple[list[int], list[float]]:
    """Query weights: the count of each term in the query (1 for a term used once)."""
    counts = Counter(term_id(t) for t in tokens)
    indices = sorted(counts)
    return indices, [float(counts[i]) for i in indices]


def check_batch(chunks: Sequence[Chunk], vectors: np.ndarray, dim: int | None) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
        raise InvalidRequest(f"expected {len(chunks)} vectors, got an array of shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise EmbeddingMismatch(f"vectors have dimension {vectors.shape[1]}, the collection has {dim}")
    return vectors


def _quiet_local_mode() -> None:
    """Local mode warns that payload indexes and search params do nothing there: known, by design."""
    warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
    warnings.filterwarnings("ignore", message="Local mode performs exact", category=UserWarning)


class QdrantClientStore:
    """`VectorStore` on a `qdrant_client.QdrantClient`. The collection options are plain values
    applied when a collection is created (server only: HNSW, on-disk storage, int8 quantization,
    shards, replicas); `ensure_collection` takes the same names to override them per collection.
    None leaves the server's default."""

    def __init__(self, client: Any, *, hnsw_m: int | None = None, hnsw_ef_construct: int | None = None,
                 hnsw_ef: int | None = None, on_disk_vectors: bool | None = None, on_disk_payload: bool | None = None,
                 scalar_quantization: bool = False, shard_number: int | None = None,
                 replication_factor: int | None = None, batch_size: int = 256, serialize: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client = client
        self.hnsw_ef = hnsw_ef
        self.options: dict[str, Any] = {
            "hnsw_m": hnsw_m, "hnsw_ef_construct": hnsw_ef_construct, "on_disk_vectors": on_disk_vectors,
            "on_disk_payload": on_disk_payload, "scalar_quantization": scalar_quantization,
            "shard_number": shard_number, "replication_factor": replication_factor}
        self.batch_size = batch_size
        # local mode is not safe for concurrent use: one lock; a server client runs requests in parallel
        self._lock: Any = threading.RLock() if serialize else contextlib.nullcontext()
        self._dims: dict[str, int] = {}

    @classmethod
    def local(cls, path: str, **options: Any) -> QdrantClientStore:
        from qdrant_client import QdrantClient

        _quiet_local_mode()
        return cls(QdrantClient(path=str(path), force_disable_check_same_thread=True), serialize=True, **options)

    @classmethod
    def memory(cls, **options: Any) -> QdrantClientStore:
        from qdrant_client import QdrantClient

        _quiet_local_mode()
        return cls(QdrantClient(":memory:", force_disable_check_same_thread=True), serialize=True, **options)

    @classmethod
    def server(cls, url: str, api_key: str | None = None, timeout: int = 30, **options: Any) -> QdrantClientStore:
        from qdrant_client import QdrantClient

        return cls(QdrantClient(url=url, api_key=api_key, timeout=timeout), **options)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        from qdrant_client.http.exceptions import ApiException

        with self._lock:
            try:
                yield
            except ApiException as exc:
                raise StoreError(f"qdrant {what} failed: {exc}") from exc

    # collections ---------------------------------------------------------------------------

    def collection_exists(self, name: str) -> bool:
        with self.guard("collection_exists"):
            return bool(self.client.collection_exists(name))

    def collections(self) -> list[str]:
        with self.guard("get_collections"):
            return sorted(c.name for c in self.client.get_collections().collections)

    def _dim(self, name: str) -> int:
        if name not in self._dims:
            if not self.collection_exists(name):
                raise NotFound(f"collection {name!r} does not exist", field="kb")
            with self.guard("get_collection"):
                params = self.client.get_collection(name).config.params
            vectors = params.vectors
            vectors = vectors.get("") if isinstance(vectors, dict) else vectors
            if vectors is None:
                raise StoreError(f"collection {name!r} has no default dense vector")
            self._dims[name] = int(vectors.size)
        return self._dims[name]

    def ensure_collection(self, name: str, dim: int, options: CollectionOptions | None = None) -> None:
        """Create the collection (cosine) with its payload indexes, or check the existing one's
        dimension. `options` override the store's collection options where they are not None."""
        from qdrant_client import models

        options = options or CollectionOptions()
        sparse = options.sparse
        if self.collection_exists(name):
            have = self._dim(name)
            if have != dim:
                raise EmbeddingMismatch(f"collection {name!r} holds {have}-d vectors, the embedder gives {dim}-d")
            if sparse:
                with self.guard("get_collection"):
                    sparse_cfg = self.client.get_collection(name).config.params.sparse_vectors or {}
                if SPARSE_NAME not in sparse_cfg:
                    raise StoreError(f"collection {name!r} was created without sparse vectors: re-create it")
            return
        opt = {**self.options, **{k: v for k, v in asdict(options).items() if k in self.options and v is not None}}
        hnsw = None
        if opt["hnsw_m"] is not None or opt["hnsw_ef_construct"] is not None:
            hnsw = models.HnswConfigDiff(m=opt["hnsw_m"], ef_construct=opt["hnsw_ef_construct"])
        quant = None
        if opt["scalar_quantization"]:
            quant = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
        with self.guard("create_collection"):
            self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE,
                                                   on_disk=opt["on_disk_vectors"]),
                sparse_vectors_config={SPARSE_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)}
                if sparse else None,
                hnsw_config=hnsw, quantization_config=quant, on_disk_payload=opt["on_disk_payload"],
                shard_number=opt["shard_number"], replication_factor=opt["replication_factor"])
            for field in KEYWORD_FIELDS:
                self.client.create_payload_index(name, field, field_schema=models.PayloadSchemaType.KEYWORD)
            for field in FLOAT_FIELDS:
                self.client.create_payload_index(name, field, field_schema=models.PayloadSchemaType.FLOAT)
        self._dims[name] = dim
        log.info("created qdrant collection %s (dim=%d, sparse=%s)", name, dim, sparse)

    def drop_collection(self, name: str) -> None:
        with self.guard("delete_collection"):
            if self.client.collection_exists(name):
                self.client.delete_collection(name)
        self._dims.pop(name, None)

    # points --------------------------------------------------------------------------------

    def upsert(self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray,
               sparse_vectors: Sequence[tuple[Sequence[int], Sequence[float]]] | None = None) -> None:
        from qdrant_client import models

        vectors = check_batch(chunks, vectors, self._dim(name))
        if sparse_vectors is not None and len(sparse_vectors) != len(chunks):
            raise InvalidRequest(f"expected {len(chunks)} sparse vectors, got {len(sparse_vectors)}")
        for start in range(0, len(chunks), self.batch_size):
            points = []
            for i in range(start, min(start + self.batch_size, len(chunks))):
                vector: Any = vectors[i].tolist()
                if sparse_vectors is not None:
                    indices, values = sparse_vectors[i]
                    vector = {"": vector, SPARSE_NAME: models.SparseVector(indices=list(indices), values=list(values))}
                points.append(models.PointStruct(id=point_uuid(chunks[i].id), vector=vector,
                                                 payload=chunks[i].payload()))
            with self.guard("upsert"):
                self.client.upsert(name, points=points, wait=True)

    def delete(self, name: str, chunk_ids: Sequence[str]) -> None:
        from qdrant_client import models

        self._dim(name)
        ids = list(dict.fromkeys(chunk_ids))
        for start in range(0, len(ids), self.batch_size):
            selector = models.PointIdsList(points=[point_uuid(c) for c in ids[start:start + self.batch_size]])
            with self.guard("delete"):
                self.client.delete(name, points_selector=selector, wait=True)

    def search(self, name: str, vector: np.ndarray, limit: int, flt: Filter | None = None, *,
               exact: bool = False) -> list[ScoredId]:
        from qdrant_client import models

        dim = self._dim(name)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != dim:
            raise EmbeddingMismatch(f"query vector has dimension {query.shape[0]}, the collection has {dim}")
        if limit <= 0:
            return []
        params = models.SearchParams(hnsw_ef=self.hnsw_ef, exact=exact) if self.hnsw_ef or exact else None
        with self.guard("query_points"):
            points = self.client.query_points(name, query=query.tolist(), limit=limit, query_filter=to_qdrant(flt),
                                              search_params=params, with_payload=["chunk_id"]).points
        return [ScoredId(p.payload["chunk_id"], float(p.score)) for p in points]

    def search_sparse(self, name: str, indices: Sequence[int], values: Sequence[float], limit: int,
                      flt: Filter | None = None) -> list[ScoredId]:
        from qdrant_client import models

        self._dim(name)
        if limit <= 0 or not indices:
            return []
        query = models.SparseVector(indices=list(indices), values=list(values))
        with self.guard("query_points"):
            points = self.client.query_points(name, query=query, using=SPARSE_NAME, limit=limit,
                                              query_filter=to_qdrant(flt), with_payload=["chunk_id"]).points
        return [ScoredId(p.payload["chunk_id"], float(p.score)) for p in points]

    def ids(self, name: str) -> set[str]:
        self._dim(name)
        out: set[str] = set()
        offset = None
        while True:
            with self.guard("scroll"):
                records, offset = self.client.scroll(name, limit=1024, offset=offset, with_payload=["chunk_id"],
                                                     with_vectors=False)
            out.update(r.payload["chunk_id"] for r in records)
            if offset is None:
                return out

    def get_payloads(self, name: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given chunks (those that exist), keyed by chunk id."""
        self._dim(name)
        ids = list(dict.fromkeys(chunk_ids))
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), self.batch_size):
            with self.guard("retrieve"):
                records = self.client.retrieve(name, ids=[point_uuid(c) for c in ids[start:start + self.batch_size]],
                                               with_payload=True, with_vectors=False)
            out.update((r.payload["chunk_id"], dict(r.payload)) for r in records)
        return out

    def count(self, name: str) -> int:
        self._dim(name)
        with self.guard("count"):
            return int(self.client.count(name, exact=True).count)

    def optimize(self, name: str, min_unindexed: int = 0) -> bool:
        """Nothing to do: a server optimises in the background, local mode has no index."""
        self._dim(name)
        return False

    def recover(self, name: str) -> RecoveryReport:
        """Nothing to recover here: a Qdrant server replays its own WAL, and local mode keeps no
        index files (NotFound for an unknown collection)."""
        self._dim(name)
        return RecoveryReport(name)

    def close(self) -> None:
        with self._lock:
            self.client.close()
