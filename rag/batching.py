"""Micro-batching of concurrent model calls: queries that arrive while the model is busy are
embedded (or their pairs reranked) together in one call, instead of each waiting its turn.

`MicroBatcher(fn)` serialises calls to `fn(items) -> results` (one result per item, in order).
A caller that finds the model idle runs at once with what is queued (a lone query pays nothing:
no timer, no extra thread); callers arriving while it runs queue up, and when the call returns
the first of them runs all queued items, up to `max_items`, in one call. `max_wait` > 0 lets a
caller that finds the model idle wait that long for company first (useful on a GPU, where a
batch of 32 costs about what one costs). Errors reach every caller of the failed call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from rag.protocols import Embedder, PairReranker

T = TypeVar("T")
R = TypeVar("R")


class _Request(Generic[T]):
    __slots__ = ("items", "result", "error", "done")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.result: list[Any] | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_items: int = 64, max_wait: float = 0.0) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._fn = fn
        self.max_items = max_items
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._queue: list[_Request[T]] = []
        self._busy = False
        self.calls = 0  # model calls made
        self.requests = 0  # requests served

    def run(self, items: Sequence[T]) -> list[R]:
        request = _Request(list(items))
        if not request.items:
            return []
        with self._cond:
            self._queue.append(request)
            self.requests += 1
            while not request.done:
                if not self._busy:
                    batch = self._take()
                    break
                self._cond.wait()
            else:
                return self._result(request)
        self._execute(batch)
        with self._cond:
            while not request.done:  # our request did not fit in the batch we ran: wait or lead again
                if not self._busy:
                    batch = self._take()
                    self._cond.release()
                    try:
                        self._execute(batch)
                    finally:
                        self._cond.acquire()
                else:
                    self._cond.wait()
        return self._result(request)

    def _take(self) -> list[_Request[T]]:
        """Called holding the condition: mark busy and take requests (FIFO) up to max_items."""
        self._busy = True
        if self.max_wait > 0 and sum(len(r.items) for r in self._queue) < self.max_items:
            deadline = time.monotonic() + self.max_wait
            while sum(len(r.items) for r in self._queue) < self.max_items:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_items):
            request = self._queue.pop(0)
            batch.append(request)
            size += len(request.items)
        return batch

    def _execute(self, batch: list[_Request[T]]) -> None:
        flat = [item for request in batch for item in request.items]
        error: BaseException | None = None
        results: Sequence[R] = ()
        try:
            results = self._fn(flat)
            if len(results) != len(flat):
                raise RuntimeError(f"batched call returned {len(results)} results for {len(flat)} items")
        except BaseException as exc:  # handed to every waiting caller, re-raised in each
            error = exc
        with self._cond:
            offset = 0
            for request in batch:
                n = len(request.items)
                if error is None:
                    request.result = list(results[offset:offset + n])
                request.error = error
                request.done = True
                offset += n
            self.calls += 1
            self._busy = False
            self._cond.notify_all()

    @staticmethod
    def _result(request: _Request[T]) -> list[R]:
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]


class BatchingEmbedder:
    """An Embedder whose `encode_queries` calls from concurrent requests share one model call;
    `encode_corpus` (ingest, already batched) goes straight through."""

    def __init__(self, inner: Embedder, *, max_items: int = 64, max_wait: float = 0.0) -> None:
        self.inner = inner
        self._batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            lambda texts: list(inner.encode_queries(texts)), max_items=max_items, max_wait=max_wait)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def batcher(self) -> MicroBatcher:
        return self._batcher

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_corpus(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        rows = self._batcher.run(list(texts))
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def warm_up(self) -> None:
        self.inner.warm_up()


class BatchingReranker:
    """A Reranker whose `score` calls from concurrent queries are scored as one list of pairs
    (`inner.score_pairs`)."""

    def __init__(self, inner: PairReranker, *, max_items: int = 128, max_wait: float = 0.0) -> None:
        self.inner = inner
        self._batcher: MicroBatcher[tuple[str, str], float] = MicroBatcher(
            inner.score_pairs, max_items=max_items, max_wait=max_wait)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def batcher(self) -> MicroBatcher:
        return self._batcher

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return self._batcher.run([(query, p) for p in passages])

    def warm_up(self) -> None:
        self.inner.warm_up()
