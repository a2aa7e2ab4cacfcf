"""The write lock of a knowledge base: one writer per knowledge base across threads and processes.

Taken only through `KnowledgeBases.writing(name)` (rag/kb.py); this module holds the mechanism."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.errors import Busy


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
