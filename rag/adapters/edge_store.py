"""Vector store on Qdrant Edge (`qdrant-edge-py`): the real Rust Qdrant engine in-process.

One `EdgeShard` per collection in `<path>/<collection>/`, opened lazily on first use (reopening
takes milliseconds) and kept open until `close()`. Every write goes through the shard's WAL,
which survives a killed process; `flush()` after each upsert/delete call also persists the
segments. A lock per shard serialises calls on it and guards close/drop.

HNSW: Edge has no background optimiser. Points land in a plain (brute-force, exact) segment
until `optimize(name)` runs the optimisers, which build the HNSW graph for segments above the
indexing threshold. `optimize` holds the GIL for its whole run (measured on 2 cores, 384-d:
1.3 s at 10k, 60-115 s at 100k), so every other thread of the process waits: call it at the end
of an ingest job, and skip it while few points are unindexed (`min_unindexed`): plain search
costs ~1 ms per 20k points.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.adapters.filters import FLOAT_FIELDS, KEYWORD_FIELDS, to_edge
from rag.adapters.qdrant_store import SPARSE_NAME, check_batch
from rag.errors import EmbeddingMismatch, InvalidRequest, NotFound, StoreError
from rag.ids import point_uuid
from rag.protocols import CollectionOptions
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_CONFIG_FILE = "edge_config.json"  # written by qdrant-edge next to its segments


@dataclass
class _Entry:
    shard: Any
    dim: int
    sparse: bool
    lock: threading.RLock = field(default_factory=threading.RLock)
    closed: bool = False


class EdgeStore:
    """`VectorStore` on Qdrant Edge shards under `path`."""

    def __init__(self, path: str | Path, hnsw_m: int = 16, hnsw_ef_construct: int = 100, hnsw_ef: int = 128, *,
                 full_scan_threshold_kb: int = 10_000, indexing_threshold_kb: int | None = None,
                 on_disk_vectors: bool = False, on_disk_payload: bool = True, scalar_quantization: bool = False,
                 max_search_threads: int | None = None,
                 batch_size: int = 256) -> None:
        if hnsw_m < 0 or hnsw_ef_construct < 4 or hnsw_ef < 1:
            raise ValueError(f"bad HNSW settings m={hnsw_m} ef_construct={hnsw_ef_construct} ef={hnsw_ef}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = Path(path)
        self.hnsw_m, self.hnsw_ef_construct, self.hnsw_ef = hnsw_m, hnsw_ef_construct, hnsw_ef
        self.full_scan_threshold_kb = full_scan_threshold_kb
        self.indexing_threshold_kb = indexing_threshold_kb
        self.on_disk_vectors, self.on_disk_payload = on_disk_vectors, on_disk_payload
        self.scalar_quantization = scalar_quantization
        self.max_search_threads = max_search_threads
        self.batch_size = batch_size
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()

    # collections ---------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise InvalidRequest(f"invalid collection name {name!r}", field="kb")
        return self.path / name

    def collection_exists(self, name: str) -> bool:
        with self._lock:
            return name in self._entries or (self._dir(name) / _CONFIG_FILE).is_file()

    def collections(self) -> list[str]:
        """Names of the collections on disk."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if (p / _CONFIG_FILE).is_file())

    def _entry(self, name: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                directory = self._dir(name)
                if not (directory / _CONFIG_FILE).is_file():
                    raise NotFound(f"collection {name!r} does not exist", field="kb")
                entry = self._load(directory)
                self._entries[name] = entry
            return entry

    def _load(self, directory: Path) -> _Entry:
        from qdrant_edge import EdgeShard

        try:
            config = json.loads((directory / _CONFIG_FILE).read_text(encoding="utf-8"))
            dim = int(config["vectors"][""]["size"])
            sparse = SPARSE_NAME in (config.get("sparse_vectors") or {})
            shard = EdgeShard.load(str(directory))
        except Exception as exc:  # bad JSON, or qdrant-edge's plain Exception ("Service runtime error: ...")
            if "WouldBlock" in str(exc):  # the WAL is locked: another process has this shard open
                raise StoreError(f"edge collection {directory.name!r} is open in another process") from exc
            raise StoreError(f"cannot open edge shard {directory}: {exc}") from exc
        entry = _Entry(shard, dim, sparse)
        self._ensure_payload_indexes(entry)
        log.info("opened edge shard %s (dim=%d, points=%d)", directory, dim, shard.info().points_count)
        return entry

    def _config(self, dim: int, sparse: bool, options: CollectionOptions) -> Any:
        import qdrant_edge as qe

        opt = {"hnsw_m": self.hnsw_m, "hnsw_ef_construct": self.hnsw_ef_construct,
               "on_disk_vectors": self.on_disk_vectors, "on_disk_payload": self.on_disk_payload,
               "scalar_quantization": self.scalar_quantization}
        opt.update({k: v for k, v in asdict(options).items() if k in opt and v is not None})
        quant = None
        if opt["scalar_quantization"]:
            quant = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True)
        optimizers = None
        if self.indexing_threshold_kb is not None:
            optimizers = qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold_kb)
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine,
                                        on_disk=opt["on_disk_vectors"] or None),
            sparse_vectors={SPARSE_NAME: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
            hnsw_config=qe.HnswIndexConfig(m=int(opt["hnsw_m"]), ef_construct=int(opt["hnsw_ef_construct"]),
                                           full_scan_threshold=self.full_scan_threshold_kb),
            on_disk_payload=bool(opt["on_disk_payload"]), quantization_config=quant, optimizers=optimizers,
            max_search_threads=self.max_search_threads)

    def _ensure_payload_indexes(self, entry: _Entry) -> None:
        import qdrant_edge as qe

        have = set(entry.shard.info().payload_schema)
        wanted = [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS]
        wanted += [(f, qe.PayloadSchemaType.Float) for f in FLOAT_FIELDS]
        missing = [(f, schema) for f, schema in wanted if f not in have]
        for field_name, schema in missing:
            entry.shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
        if missing:
            entry.shard.flush()

    def ensure_collection(self, name: str, dim: int, options: CollectionOptions | None = None) -> None:
        """Create the shard (cosine, payload indexes) or check the existing one's dimension.
        `options` override the store's collection options where they are not None (one shard and
        no replicas: `shard_number` and `replication_factor` do not apply)."""
        from qdrant_edge import EdgeShard

        options = options or CollectionOptions()
        sparse = options.sparse
        with self._lock:
            if self.collection_exists(name):
                entry = self._entry(name)
                if entry.dim != dim:
                    raise EmbeddingMismatch(
                        f"collection {name!r} holds {entry.dim}-d vectors, the embedder gives {dim}-d")
                if sparse and not entry.sparse:
                    raise StoreError(f"collection {name!r} was created without sparse vectors: re-create it")
                return
            directory = self._dir(name)
            config = self._config(dim, sparse, options)
            directory.mkdir(parents=True, exist_ok=True)
            try:
                shard = EdgeShard.create(str(directory), config)
            except Exception as exc:  # qdrant-edge raises a bare Exception
                raise StoreError(f"cannot create edge shard {directory}: {exc}") from exc
            entry = _Entry(shard, dim, sparse)
            self._ensure_payload_indexes(entry)
            self._entries[name] = entry
            log.info("created edge collection %s (dim=%d, sparse=%s)", name, dim, sparse)

    def drop_collection(self, name: str) -> None:
        with self._lock:
            directory = self._dir(name)
            entry = self._entries.pop(name, None)
            if entry is not None:
                with entry.lock:
                    entry.closed = True
                    entry.shard.close()
            shutil.rmtree(directory, ignore_errors=True)

    # points --------------------------------------------------------------------------------

    def _open(self, name: str) -> _Entry:
        """The entry, locked by the caller; raises NotFound if it was dropped meanwhile."""
        entry = self._entry(name)
        entry.lock.acquire()
        if entry.closed:
            entry.lock.release()
            raise NotFound(f"collection {name!r} does not exist", field="kb")
        return entry

    def upsert(self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray,
               sparse_vectors: Sequence[tuple[Sequence[int], Sequence[float]]] | None = None) -> None:
        import qdrant_edge as qe

        entry = self._open(name)
        try:
            vectors = check_batch(chunks, vectors, entry.dim)
            if sparse_vectors is not None:
                if not entry.sparse:
                    raise InvalidRequest(f"collection {name!r} has no sparse vectors")
                if len(sparse_vectors) != len(chunks):
                    raise InvalidRequest(f"expected {len(chunks)} sparse vectors, got {len(sparse_vectors)}")
            for start in range(0, len(chunks), self.batch_size):
                points = []
                for i in range(start, min(start + self.batch_size, len(chunks))):
                    vector: Any = vectors[i]
                    if sparse_vectors is not None:
                        indices, values = sparse_vectors[i]
                        vector = {"": vector, SPARSE_NAME: qe.SparseVector(list(indices), [float(v) for v in values])}
                    points.append(qe.Point(point_uuid(chunks[i].id), vector, chunks[i].payload()))
                entry.shard.update(qe.UpdateOperation.upsert_points(points))
            if chunks:
                entry.shard.flush()
        finally:
            entry.lock.release()

    def delete(self, name: str, chunk_ids: Sequence[str]) -> None:
        import qdrant_edge as qe

        ids = list(dict.fromkeys(chunk_ids))
        entry = self._open(name)
        try:
            for start in range(0, len(ids), self.batch_size):
                batch = [point_uuid(c) for c in ids[start:start + self.batch_size]]
                entry.shard.update(qe.UpdateOperation.delete_points(batch))
            if ids:
                entry.shard.flush()
        finally:
            entry.lock.release()

    def search(self, name: str, vector: np.ndarray, limit: int, flt: Filter | None = None, *,
               exact: bool = False) -> list[ScoredId]:
        import qdrant_edge as qe

        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        entry = self._open(name)
        try:
            if query.shape[0] != entry.dim:
                raise EmbeddingMismatch(f"query vector has dimension {query.shape[0]}, the collection has {entry.dim}")
            if limit <= 0:
                return []
            request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(query), filter=to_edge(flt),
                                      params=qe.SearchParams(hnsw_ef=self.hnsw_ef, exact=exact),
                                      with_payload=qe.PayloadSelector.Include(["chunk_id"]))
            points = entry.shard.query(request)
        finally:
            entry.lock.release()
        return [ScoredId(p.payload["chunk_id"], float(p.score)) for p in points]

    def search_sparse(self, name: str, indices: Sequence[int], values: Sequence[float], limit: int,
                      flt: Filter | None = None) -> list[ScoredId]:
        import qdrant_edge as qe

        entry = self._open(name)
        try:
            if not entry.sparse:
                raise InvalidRequest(f"collection {name!r} has no sparse vectors")
            if limit <= 0 or not indices:
                return []
            query = qe.Query.Nearest(qe.SparseVector(list(indices), [float(v) for v in values]), using=SPARSE_NAME)
            request = qe.QueryRequest(limit=limit, query=query, filter=to_edge(flt),
                                      with_payload=qe.PayloadSelector.Include(["chunk_id"]))
            points = entry.shard.query(request)
        finally:
            entry.lock.release()
        return [ScoredId(p.payload["chunk_id"], float(p.score)) for p in points]

    def ids(self, name: str) -> set[str]:
        import qdrant_edge as qe

        out: set[str] = set()
        offset = None
        entry = self._open(name)
        try:
            while True:
                request = qe.ScrollRequest(offset=offset, limit=1024, with_vector=False,
                                           with_payload=qe.PayloadSelector.Include(["chunk_id"]))
                records, offset = entry.shard.scroll(request)
                out.update(r.payload["chunk_id"] for r in records)
                if offset is None:
                    return out
        finally:
            entry.lock.release()

    def get_payloads(self, name: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given chunks (those that exist), keyed by chunk id."""
        ids = list(dict.fromkeys(chunk_ids))
        out: dict[str, dict[str, Any]] = {}
        entry = self._open(name)
        try:
            for start in range(0, len(ids), self.batch_size):
                records = entry.shard.retrieve([point_uuid(c) for c in ids[start:start + self.batch_size]], True, False)
                out.update((r.payload["chunk_id"], dict(r.payload)) for r in records)
        finally:
            entry.lock.release()
        return out

    def get_vectors(self, name: str, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Dense vectors of the given chunks (those that exist), keyed by chunk id: for copying a
        collection without re-embedding (benchmarks, migrations)."""
        ids = list(dict.fromkeys(chunk_ids))
        out: dict[str, np.ndarray] = {}
        entry = self._open(name)
        try:
            for start in range(0, len(ids), self.batch_size):
                records = entry.shard.retrieve([point_uuid(c) for c in ids[start:start + self.batch_size]], True, True)
                for r in records:
                    vector = r.vector.get("", next(iter(r.vector.values()))) if isinstance(r.vector, dict) else r.vector
                    out[r.payload["chunk_id"]] = np.asarray(vector, dtype=np.float32)
        finally:
            entry.lock.release()
        return out

    def count(self, name: str) -> int:
        import qdrant_edge as qe

        entry = self._open(name)
        try:
            return int(entry.shard.count(qe.CountRequest(exact=True)))
        finally:
            entry.lock.release()

    def index_info(self, name: str) -> dict[str, int]:
        """Points, HNSW-indexed vectors and segments of a collection."""
        entry = self._open(name)
        try:
            info = entry.shard.info()
            return {"points": info.points_count, "indexed_vectors": info.indexed_vectors_count,
                    "segments": info.segments_count}
        finally:
            entry.lock.release()

    def optimize(self, name: str, min_unindexed: int = 0) -> bool:
        """Run the optimisers (build HNSW for segments above the indexing threshold, vacuum
        deletions) when at least `min_unindexed` points are outside the HNSW graph. Blocking,
        GIL held. True if anything changed."""
        entry = self._open(name)
        try:
            info = entry.shard.info()
            if info.points_count - info.indexed_vectors_count < min_unindexed:
                return False
            changed = bool(entry.shard.optimize())
            entry.shard.flush()
        finally:
            entry.lock.release()
        log.info("optimised edge collection %s (changed=%s)", name, changed)
        return changed

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            with entry.lock:
                if not entry.closed:
                    entry.closed = True
                    entry.shard.flush()
                    entry.shard.close()
