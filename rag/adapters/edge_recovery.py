"""Keeping a Qdrant Edge shard writable, and rebuilding one that is damaged (`EdgeStore` calls these).

What qdrant-edge-py 0.9.0 guarantees, checked with strace, fault injection (SIGKILL at each
write/fsync/msync/rename of a flush) and truncated copies of every file of a shard:

- Every update is appended to the shard's WAL (`wal/open-N`) before it is applied. `flush()`
  persists the segments (msync + fsync; the payload tracker's redo journal `tracker_journal.dat`
  is fsynced before `tracker.dat` changes) and then acknowledges the WAL (`wal/first-index`,
  replaced by rename). `load()` replays the journals and the unacknowledged WAL tail: an update
  that returned survives kill -9 even before its flush, and a kill anywhere inside a flush leaves
  a state `load()` completes (a 0-byte journal included).
- The WAL is no backup: acknowledged entries are dropped, so it cannot rebuild a damaged segment
  file, and the Python API takes no snapshot (it only restores one a Qdrant server made).
- A truncated segment file either fails `load()` (configs, `segment.json`, `tracker.dat`,
  `bitmask.dat`, the WAL; a `status.dat` even panics: pyo3's PanicException, a BaseException)
  or loads and fails every read and write that touches it (`page_0.dat`, `chunk_0.mmap`).
- `load()` replays and *removes* every segment's tracker journal before it takes the WAL lock: a
  second opener (another process, or a second store in this one) fails with WouldBlock, but the
  live shard's next flush then fails for good with "Tracker journal ... is shorter than expected"
  (leaving the journal at 0 bytes) until it is reopened, when its WAL restores what was not flushed.

Hence `lock_folder` (an flock on the collection folder, taken before `load` and held while the
shard is open: a second opener is refused before it touches a file), a reopen and one retry when
a write fails (`EdgeStore`), and `rebuild`: every point that reads back whole is copied into a
fresh shard beside the damaged one, then the folders are swapped by rename; the damaged folder is
kept as `<name>.damaged-<time>` and the points that could not be read are counted, never hidden
(their chunks are then missing from the store, which `KnowledgeBase.check` reports)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rag.errors import StoreError, StoreHeld
from rag.protocols import RecoveryReport

log = logging.getLogger(__name__)

CONFIG_FILE = "edge_config.json"  # written by qdrant-edge next to its segments
DAMAGED_MARK = ".damaged-"  # <name>.damaged-<time>: a damaged shard kept after its rebuild


def engine_error(exc: BaseException) -> bool:
    """What qdrant-edge raises for a failed call: a plain Exception ("Service runtime error: ...")
    or a Rust panic (PanicException derives from BaseException, not Exception). Nothing else: a
    bug of ours (TypeError, ...) or one of our own errors is never taken for a damaged store."""
    return type(exc) is Exception or type(exc).__name__ == "PanicException"


def lock_folder(directory: Path) -> int:
    """An exclusive, non-blocking flock on the collection folder itself (no file of qdrant's); the
    descriptor, to keep open while the shard is. StoreHeld when another process (or another store
    of this one) holds it."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StoreError(f"cannot open edge collection {directory.name!r}: {exc.strerror or 'I/O error'}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StoreHeld(f"edge collection {directory.name!r} is open in another process") from exc
    return fd


def read_layout(directory: Path, sparse_name: str) -> tuple[int, bool]:
    """(dimension, has the sparse vector) from `edge_config.json`, else from a segment's
    `segment.json`; StoreError when neither reads."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        return int(config["vectors"][""]["size"]), sparse_name in (config.get("sparse_vectors") or {})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for path in sorted((directory / "segments").glob("*/segment.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))["config"]
            return int(config["vector_data"][""]["size"]), sparse_name in (config.get("sparse_vector_data") or {})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    raise StoreError(f"edge collection {directory.name!r}: neither {CONFIG_FILE} nor a segment.json is readable")


def empty_files(directory: Path) -> list[str]:
    """Files of the shard's segments and WAL left at 0 bytes (a healthy shard has none; temporary
    files of qdrant's atomic writes, in hidden folders, are not counted)."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            try:
                if path.stat().st_size == 0:
                    found.append(str(path.relative_to(directory)))
            except OSError:
                found.append(str(path.relative_to(directory)))
    return found


def pages(shard: Any, limit: int, with_payload: Any, with_vector: Any) -> Iterator[list[Any]]:
    """The records of every point of `shard`, a scroll page (up to `limit`) at a time; the engine's
    errors propagate to the caller's loop."""
    import qdrant_edge as qe

    offset = None
    while True:
        records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=limit, with_payload=with_payload,
                                                        with_vector=with_vector))
        yield records
        if offset is None:
            return


def verify(shard: Any, batch: int) -> str:
    """Read every point back with its payload and vector: "" when all read, else the error."""
    try:
        for records in pages(shard, batch, True, True):
            if any(not _whole(r) for r in records):
                return "a point has no payload or no vector"
        return ""
    except BaseException as exc:
        if not engine_error(exc):
            raise
        return f"a read failed: {exc}"


def _whole(record: Any) -> bool:
    return bool(record.payload) and "chunk_id" in record.payload and record.vector is not None


class _Copier:
    """Copies whole points into `target`, counting what it copied and what it could not read."""

    def __init__(self, target: Any, batch: int) -> None:
        self.target, self.batch = target, batch
        self.copied = self.lost = 0

    def write(self, records: Sequence[Any]) -> None:
        import qdrant_edge as qe

        whole = [r for r in records if _whole(r)]
        self.lost += len(records) - len(whole)
        if whole:
            self.target.update(qe.UpdateOperation.upsert_points([qe.Point(r.id, r.vector, r.payload) for r in whole]))
            self.copied += len(whole)

    def copy_shard(self, source: Any) -> None:
        """Every point of `source` that reads back whole: by pages, or point by point when a page
        does not read (the ids come from the id tracker, which the damaged files may spare)."""
        copied, lost = self.copied, self.lost
        try:
            for records in pages(source, self.batch, True, True):
                self.write(records)
            return
        except BaseException as exc:
            if not engine_error(exc):
                raise
            log.warning("reading the damaged shard page by page failed (%s): reading it point by point", exc)
        self.copied, self.lost = copied, lost  # start again: upserts are idempotent
        ids = self._ids(source)
        for start in range(0, len(ids), self.batch):
            self._retrieve(source, ids[start:start + self.batch])

    def _ids(self, source: Any) -> list[Any]:
        ids: list[Any] = []
        try:
            for records in pages(source, 4096, False, False):
                ids.extend(r.id for r in records)
            return ids
        except BaseException as exc:
            if not engine_error(exc):
                raise
            log.error("the ids of the damaged shard do not read (%s): its points are lost", exc)
            self.lost += _count(source)
            return []

    def _retrieve(self, source: Any, ids: list[Any]) -> None:
        """Retrieve `ids` whole, halving the batch around the points that fail to read."""
        try:
            records = source.retrieve(ids, True, True)
        except BaseException as exc:
            if not engine_error(exc):
                raise
            if len(ids) == 1:
                self.lost += 1
                return
            half = len(ids) // 2
            self._retrieve(source, ids[:half])
            self._retrieve(source, ids[half:])
            return
        self.write(records)
        self.lost += len(ids) - len(records)


def _count(shard: Any) -> int:
    import qdrant_edge as qe

    try:
        return int(shard.count(qe.CountRequest(exact=True)))
    except BaseException as exc:
        if not engine_error(exc):
            raise
        return 0


def close_quietly(shard: Any) -> None:
    """Close a shard; a close the engine fails (a damaged or half-written shard) is logged, not raised."""
    try:
        shard.close()
    except BaseException as exc:
        if not engine_error(exc):
            raise
        log.warning("closing an edge shard failed: %s", exc)


def rebuild(directory: Path, config: Any, prepare: Callable[[Any], None], source: Any | None, reason: str,
            batch: int = 256) -> tuple[RecoveryReport, int]:
    """Copy what reads back of the shard in `directory` into a fresh shard created with `config`
    (`prepare` adds its payload indexes), then swap the folders by rename: the damaged one becomes
    `<name>.damaged-<time>`, kept. `source`: the shard loaded from `directory` (closed here), or
    None when it does not load; then each segment is loaded alone, from a copy, and a segment that
    does not load is lost. The caller holds `lock_folder(directory)`. Returns the report and the
    lock of the new folder (taken before the swap, so no other opener gets in between)."""
    from qdrant_edge import EdgeShard

    name = directory.name
    for leftover in [*directory.parent.glob(f".{name}.rebuild-*"), *directory.parent.glob(f".{name}.segment-*")]:
        shutil.rmtree(leftover, ignore_errors=True)  # a killed rebuild's (the caller holds the lock)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh = directory.parent / f".{name}.rebuild-{stamp}-{os.getpid()}"
    try:
        fresh.mkdir()
    except OSError as exc:
        raise StoreError(f"cannot rebuild edge collection {name!r}: {exc.strerror or 'I/O error'}") from exc
    fd = lock_folder(fresh)
    lost_segments: list[str] = []
    copier = _Copier(None, batch)
    kept = directory.parent / f"{name}{DAMAGED_MARK}{stamp}"
    target = None
    try:
        target = EdgeShard.create(str(fresh), config)
        prepare(target)
        copier.target = target
        if source is not None:
            copier.copy_shard(source)
        else:
            lost_segments = _copy_segments(directory, config, copier)
        target.flush()
        target.close()
        target = None
        if source is not None:
            close_quietly(source)
            source = None
        os.rename(directory, kept)
        os.rename(fresh, directory)
    except BaseException as exc:
        if target is not None:
            close_quietly(target)
        os.close(fd)
        shutil.rmtree(fresh, ignore_errors=True)
        if isinstance(exc, StoreError) or not (engine_error(exc) or isinstance(exc, OSError)):
            raise  # a folder that cannot be swapped (gone, read-only) is a store failure like the engine's
        log.error("edge collection %s is damaged and could not be rebuilt: %s", name, exc)
        raise StoreError(f"the vector store could not rebuild its damaged collection {name!r}; "
                         "the server log has the details") from exc
    finally:
        if source is not None:
            close_quietly(source)
    report = RecoveryReport(name, "rebuilt", copier.copied, copier.lost, tuple(lost_segments), str(kept), reason)
    (log.error if report.lost or report.lost_segments else log.warning)("edge store: %s", report.message)
    return report, fd


def _copy_segments(directory: Path, config: Any, copier: _Copier) -> list[str]:
    """Load each segment of `directory` alone (a copy, with a fresh WAL) and copy its points; the
    names of the segments that do not load."""
    from qdrant_edge import EdgeShard

    lost = []
    segments = directory / "segments"
    for segment in sorted(p for p in segments.iterdir() if p.is_dir()) if segments.is_dir() else []:
        with tempfile.TemporaryDirectory(prefix=f".{directory.name}.segment-", dir=directory.parent) as tmp:
            shutil.copytree(segment, Path(tmp) / "segments" / segment.name)
            try:
                shard = EdgeShard.load(tmp, config)
            except BaseException as exc:
                if not engine_error(exc):
                    raise
                log.error("segment %s of edge collection %s does not load (%s): its points are lost",
                          segment.name, directory.name, exc)
                lost.append(segment.name)
                continue
            try:
                copier.copy_shard(shard)
            finally:
                close_quietly(shard)
    return lost
