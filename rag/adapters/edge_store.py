"""Vector store on Qdrant Edge (`qdrant-edge-py`): the real Rust Qdrant engine in-process.

One `EdgeShard` per collection in `<path>/<collection>/`, opened lazily on first use (reopening
takes milliseconds) and kept open until `close()`. Every write goes through the shard's WAL,
which survives a killed process; `flush()` after each upsert/delete call also persists the
segments. A lock per shard serialises calls on it and guards close/drop.

Recovery (rag/adapters/edge_recovery.py has what qdrant-edge guarantees): the collection folder is
flocked before its shard loads and while it is open, so a second opener (another process, a second
store) is refused before qdrant-edge touches a file (its `load` removes the live shard's tracker
journals before it finds the WAL locked, and the owner's flushes then fail). A shard that does not
load, or has files left at 0 bytes and does not read back, is rebuilt from what is readable. A
write whose engine call fails closes and reloads the shard (its WAL restores what was not flushed;
a shard that no longer reads back is rebuilt) and is tried once more; a second failure is a
StoreError, which fails the ingest job. `recover(name)` runs the same checks on demand.

HNSW: Edge has no background optimiser. Points land in a plain (brute-force, exact) segment
until `optimize(name)` runs the optimisers, which build the HNSW graph for segments above the
indexing threshold. `optimize` holds the GIL for its whole run (measured on 2 cores, 384-d:
1.3 s at 10k, 60-115 s at 100k), so every other thread of the process waits: call it at the end
of an ingest job, and skip it while few points are unindexed (`min_unindexed`): plain search
costs ~1 ms per 20k points.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rag.adapters.edge_recovery import (
    CONFIG_FILE,
    DAMAGED_MARK,
    close_quietly,
    empty_files,
    engine_error,
    lock_folder,
    pages,
    read_layout,
    rebuild,
    verify,
)
from rag.adapters.filters import FLOAT_FIELDS, KEYWORD_FIELDS, to_edge
from rag.adapters.qdrant_store import SPARSE_NAME, check_batch
from rag.errors import EmbeddingMismatch, InvalidRequest, NotFound, StoreError
from rag.ids import point_uuid
from rag.protocols import CollectionOptions, RecoveryReport
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)
T = TypeVar("T")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
TRASH_MARK = ".dropped-"  # .<name>.dropped-<pid>-<thread>: a collection being deleted


@dataclass
class _Entry:
    shard: Any  # None while a failed recovery left it unopened (the next call tries again)
    dim: int
    sparse: bool
    fd: int  # the flock on the collection folder (edge_recovery.lock_folder)
    lock: threading.RLock = field(default_factory=threading.RLock)
    closed: bool = False
    report: RecoveryReport | None = None  # what opening it had to do, when it did something


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
            return name in self._entries or (self._dir(name) / CONFIG_FILE).is_file()

    def collections(self) -> list[str]:
        """Names of the collections on disk."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if (p / CONFIG_FILE).is_file() and DAMAGED_MARK not in p.name and not p.name.startswith("."))

    def _entry(self, name: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                directory = self._dir(name)
                if not (directory / CONFIG_FILE).is_file():
                    raise NotFound(f"collection {name!r} does not exist", field="kb")
                fd = lock_folder(directory)  # before qdrant-edge touches a file of it
                try:
                    dim, sparse = read_layout(directory, SPARSE_NAME)
                    entry = _Entry(None, dim, sparse, fd)
                    empty = empty_files(directory)  # a healthy shard has none: read it all back then
                    reason = f"{len(empty)} file(s) at 0 bytes: {', '.join(empty[:3])}" if empty else "opening it"
                    entry.report = self._bring_up(directory, entry, check=bool(empty), reason=reason)
                except BaseException:
                    os.close(fd)
                    raise
                self._entries[name] = entry
            return entry

    def _bring_up(self, directory: Path, entry: _Entry, check: bool, reason: str) -> RecoveryReport | None:
        """Load the shard of `entry` (closed, its folder locked by `entry.fd`); when it does not
        load, or `check` and it does not read back whole, rebuild it from what is readable
        (`reason`: why it is looked at). The report of the rebuild; None when it loaded as it was.
        On a failure the entry is left without a shard."""
        from qdrant_edge import EdgeShard

        shard, problem, report = None, "", None
        try:
            shard = EdgeShard.load(str(directory))
        except BaseException as exc:
            if not engine_error(exc):
                raise
            problem = f"{reason}; it does not load: {exc}"
        if shard is not None and check:
            found = verify(shard, self.batch_size)
            problem = f"{reason}; {found}" if found else ""
        if problem:
            log.error("edge collection %s is damaged (%s): rebuilding it from what is readable", directory.name,
                      problem)
            config = self._config(entry.dim, entry.sparse, CollectionOptions(sparse=entry.sparse))
            report, fd = rebuild(directory, config, self._prepare, shard, problem, self.batch_size)
            os.close(entry.fd)
            entry.fd = fd
            shard = self._engine(directory.name, "open the rebuilt collection", lambda: EdgeShard.load(str(directory)))
        try:
            self._engine(directory.name, "create its payload indexes", lambda: self._prepare(shard))
        except StoreError:
            close_quietly(shard)
            raise
        entry.shard = shard
        log.info("opened edge shard %s (dim=%d, points=%d)", directory, entry.dim, shard.info().points_count)
        return report

    @staticmethod
    def _engine(name: str, what: str, call: Callable[[], Any]) -> Any:
        """`call()`, a qdrant-edge failure turned into a StoreError (the details go to the log)."""
        try:
            return call()
        except BaseException as exc:
            if not engine_error(exc):
                raise
            log.error("edge collection %s: could not %s: %s", name, what, exc)
            raise StoreError(f"the vector store could not {what} for collection {name!r}; "
                             "the server log has the details") from exc

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

    @staticmethod
    def _prepare(shard: Any) -> None:
        """Create the payload indexes the filters use, those the shard lacks."""
        import qdrant_edge as qe

        have = set(shard.info().payload_schema)
        wanted = [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS]
        wanted += [(f, qe.PayloadSchemaType.Float) for f in FLOAT_FIELDS]
        missing = [(f, schema) for f, schema in wanted if f not in have]
        for field_name, schema in missing:
            shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
        if missing:
            shard.flush()

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
            self._sweep()
            fd = lock_folder(directory)
            try:
                shard = self._engine(name, "create the collection", lambda: EdgeShard.create(str(directory), config))
                self._engine(name, "create its payload indexes", lambda: self._prepare(shard))
            except BaseException:
                os.close(fd)
                raise
            self._entries[name] = _Entry(shard, dim, sparse, fd)
            log.info("created edge collection %s (dim=%d, sparse=%s)", name, dim, sparse)

    def drop_collection(self, name: str) -> None:
        """Delete the collection: its folder is first renamed out of the way (atomic: a process
        killed while deleting it leaves hidden trash, never a folder without its config that is
        no collection yet blocks creating one of that name), then removed with what killed drops
        left."""
        with self._lock:
            directory = self._dir(name)
            entry = self._entries.pop(name, None)
            if entry is not None:
                with entry.lock:
                    self._shut(name, entry, flush=False)
            if directory.exists():
                os.rename(directory, self.path / f".{name}{TRASH_MARK}{os.getpid()}-{threading.get_ident()}")
            for kept in self.path.glob(f"{name}{DAMAGED_MARK}*"):  # its damaged copies go with it
                shutil.rmtree(kept, ignore_errors=True)
            self._sweep()

    def _sweep(self) -> None:
        """Remove the trash of drops that were killed while deleting (see `drop_collection`)."""
        for trash in self.path.glob(f".*{TRASH_MARK}*"):
            shutil.rmtree(trash, ignore_errors=True)

    def _shut(self, name: str, entry: _Entry, flush: bool) -> None:
        """Close the shard of `entry` for good and release its folder (the caller holds its lock);
        a flush that fails is logged (its WAL replays the rest at the next open)."""
        entry.closed = True
        shard, entry.shard = entry.shard, None
        try:
            if shard is not None:
                if flush:
                    shard.flush()
                shard.close()
        except BaseException as exc:
            if not engine_error(exc):
                raise
            log.error("edge collection %s: closing failed (%s); its WAL replays the rest when it is opened again",
                      name, exc)
            close_quietly(shard)
        finally:
            os.close(entry.fd)

    def _reopen(self, name: str, entry: _Entry, reason: str) -> RecoveryReport:
        """Close the shard of `entry` and load it again (the WAL replays what was not flushed),
        reading every point back; rebuilt when it does not load or read back. The caller holds the
        entry's lock. A failure leaves the entry without a shard: the next call tries again."""
        shard, entry.shard = entry.shard, None
        if shard is not None:
            close_quietly(shard)
        report = self._bring_up(self._dir(name), entry, check=True, reason=reason)
        return report or RecoveryReport(name, "reopened", self._count(entry), 0, (), "", reason)

    @staticmethod
    def _count(entry: _Entry) -> int:
        import qdrant_edge as qe

        return int(entry.shard.count(qe.CountRequest(exact=True)))

    def recover(self, name: str) -> RecoveryReport:
        """Reload collection `name` (which also clears a shard whose flushes failed: its WAL
        replays) and read every point back; rebuild it from what is readable when it does not load
        or read back (`edge_recovery`). What was done: action "none" when it read back whole, or
        the rebuild, also one its opening did earlier (kept until this call reports it)."""
        self._sweep()
        entry = self._open(name)
        try:
            if entry.report is not None:  # opening it just now rebuilt it
                report, entry.report = entry.report, None
                return report
            report = self._reopen(name, entry, "recovery requested")
            if report.action == "reopened" and not report.lost:
                report = RecoveryReport(name, "none", report.recovered)
            return report
        finally:
            entry.lock.release()

    def _write(self, name: str, entry: _Entry, what: str, apply: Callable[[Any], T]) -> T:
        """`apply(shard)` (idempotent engine calls) and its value; when it fails, reopen the shard
        (`_reopen`) and apply it once more. StoreError when it fails again (or the shard cannot be
        brought back)."""
        try:
            return apply(entry.shard)
        except BaseException as exc:
            if not engine_error(exc):
                raise
            log.warning("edge collection %s: %s failed (%s): reopening it and trying again", name, what, exc)
            reason = f"{what} failed"
        log.warning("edge store: %s", self._reopen(name, entry, reason).message)
        return self._engine(name, what, lambda: apply(entry.shard))

    # points --------------------------------------------------------------------------------

    def _open(self, name: str) -> _Entry:
        """The entry, locked by the caller; raises NotFound if it was dropped meanwhile."""
        entry = self._entry(name)
        entry.lock.acquire()
        if entry.closed:
            entry.lock.release()
            raise NotFound(f"collection {name!r} does not exist", field="kb")
        if entry.shard is None:  # a recovery failed earlier: try again
            try:
                self._reopen(name, entry, "an earlier recovery failed")
            except BaseException:
                entry.lock.release()
                raise
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
            if not chunks:
                return
            batches = []
            for start in range(0, len(chunks), self.batch_size):
                points = []
                for i in range(start, min(start + self.batch_size, len(chunks))):
                    vector: Any = vectors[i]
                    if sparse_vectors is not None:
                        indices, values = sparse_vectors[i]
                        vector = {"": vector, SPARSE_NAME: qe.SparseVector(list(indices), [float(v) for v in values])}
                    points.append(qe.Point(point_uuid(chunks[i].id), vector, chunks[i].payload()))
                batches.append(qe.UpdateOperation.upsert_points(points))
            self._write(name, entry, "write vectors", lambda shard: self._apply(shard, batches))
        finally:
            entry.lock.release()

    @staticmethod
    def _apply(shard: Any, operations: Sequence[Any]) -> None:
        """Apply update operations, then flush (idempotent: a retry repeats them all)."""
        for operation in operations:
            shard.update(operation)
        shard.flush()

    def delete(self, name: str, chunk_ids: Sequence[str]) -> None:
        import qdrant_edge as qe

        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return
        operations = [qe.UpdateOperation.delete_points([point_uuid(c) for c in ids[start:start + self.batch_size]])
                      for start in range(0, len(ids), self.batch_size)]
        entry = self._open(name)
        try:
            self._write(name, entry, "delete vectors", lambda shard: self._apply(shard, operations))
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
        entry = self._open(name)
        try:
            for records in pages(entry.shard, 1024, qe.PayloadSelector.Include(["chunk_id"]), False):
                out.update(r.payload["chunk_id"] for r in records)
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

            def run(shard: Any) -> bool:
                changed = bool(shard.optimize())
                shard.flush()
                return changed

            changed = self._write(name, entry, "build the vector index", run)
        finally:
            entry.lock.release()
        log.info("optimised edge collection %s (changed=%s)", name, changed)
        return changed

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.items()), {}
        for name, entry in entries:
            with entry.lock:
                if not entry.closed:
                    self._shut(name, entry, flush=True)
