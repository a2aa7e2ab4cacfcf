"""Ordered write-behind: jobs run one at a time, in the order submitted, in one background thread,
while the caller goes on (the ingest loop embeds the next batch while the last one is written).

`submit(job)` queues a job; at most `depth` jobs wait behind the one running, and `submit` blocks
while that many wait. `put(value)` adds a result that needs no job (a skipped file), kept in its
place among the jobs' results. `ready()` returns, in order, the results whose predecessors are
all done, without waiting; `finish()` waits for every job and returns the rest.

Errors: the first job that raises stops the writer: the jobs queued behind it do not run, and its
exception is raised in the caller by the next `submit`, `ready` or `finish`, at its place in the
order (the results before it are returned first by `ready`). `close()` (also on the caller's own
error) waits for the running and queued jobs (nothing submitted is lost unless a job failed) and
joins the thread; it raises nothing, so that the caller's exception is the one that propagates.

`depth` 0: no thread; `submit` runs the job at once in the caller and raises what it raises."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["OrderedWriter"]

log = logging.getLogger(__name__)

R = TypeVar("R")
_END = object()


class _Slot(Generic[R]):
    __slots__ = ("job", "value", "error", "done")

    def __init__(self, job: Callable[[], R] | None = None, value: R | None = None) -> None:
        self.job = job
        self.value = value
        self.error: BaseException | None = None
        self.done = threading.Event()
        if job is None:
            self.done.set()


class OrderedWriter(Generic[R]):
    def __init__(self, depth: int, name: str = "ingest-writer") -> None:
        self.depth = max(0, depth)
        self._slots: deque[_Slot[R]] = deque()  # submitted or put, not yet returned by ready/finish
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._jobs: queue.Queue[object] | None = None
        if self.depth:
            self._jobs = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    def submit(self, job: Callable[[], R]) -> None:
        """Queue `job` (or run it now when `depth` is 0); raises the error of an earlier job."""
        self._raise_failed()
        if self._jobs is None:
            self._slots.append(_Slot(value=job()))
            return
        slot: _Slot[R] = _Slot(job)
        self._slots.append(slot)
        self._jobs.put(slot)

    def put(self, value: R) -> None:
        """A result without a job, returned after the results of the jobs submitted before it."""
        self._slots.append(_Slot(value=value))

    def ready(self) -> list[R]:
        """The results whose predecessors are all done, in order; the error of a failed job once
        the results before it have been returned."""
        out: list[R] = []
        while self._slots and self._slots[0].done.is_set():
            slot = self._slots[0]
            if slot.error is not None:
                if out:
                    return out
                raise slot.error
            self._slots.popleft()
            out.append(slot.value)  # type: ignore[arg-type]
        if not out:
            self._raise_failed()
        return out

    def finish(self) -> list[R]:
        """Wait for every job; the results not returned yet, in order (or the first job's error)."""
        self.close()
        out: list[R] = []
        while self._slots:
            slot = self._slots.popleft()
            if slot.error is not None:
                raise slot.error
            out.append(slot.value)  # type: ignore[arg-type]
        self._raise_failed()
        return out

    def close(self) -> None:
        """Let the running and queued jobs finish (none after a failure) and join the thread."""
        if self._thread is None or self._jobs is None:
            return
        self._jobs.put(_END)  # the thread keeps taking jobs (running or dropping them): this returns
        self._thread.join()
        self._thread = None

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _work(self) -> None:
        assert self._jobs is not None
        while (slot := self._jobs.get()) is not _END:
            assert isinstance(slot, _Slot)
            if self._failed is None:
                try:
                    slot.value = slot.job()  # type: ignore[misc]
                except BaseException as exc:  # the thread boundary: kept and raised in the caller
                    log.debug("background write failed: %r", exc)
                    slot.error = self._failed = exc
            slot.done.set()
