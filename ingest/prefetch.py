"""A bounded, ordered producer: `work(item)` for each item in one background thread, at most
`depth` results ahead of the consumer, yielded in the items' order.

The ingest loop uses it to read, parse and chunk the next files while the current batch embeds
(the bundled embedder's C engine and llama.cpp release the GIL while they compute). The
producer only reads: every write (catalog, stores) stays with the consumer, in the same order as
without it. An exception raised by `work` reaches the consumer at that item's place and ends the
iteration there, as it would have done inline. Closing the iterator early (an error while
embedding, Ctrl-C) tells the producer to stop: it finishes the item it is working on, if any,
and exits without starting another."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")
R = TypeVar("R")
_END = object()
_POLL_S = 0.1


def prefetched(items: Iterable[T], work: Callable[[T], R], depth: int) -> Iterator[R]:
    """`work(item)` for each item, in order, computed up to `depth` items ahead in a thread
    (`depth` 0: inline, no thread). Close the iterator (`contextlib.closing`) when leaving early."""
    if depth <= 0:
        for item in items:
            yield work(item)
        return
    results: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set() or not put((True, work(item))):
                    return
        except BaseException as exc:  # the thread boundary: handed to the consumer, raised there
            put((False, exc))
            return
        put(_END)

    thread = threading.Thread(target=produce, name="ingest-prefetch", daemon=True)
    thread.start()
    try:
        while (got := results.get()) is not _END:
            ok, value = got  # type: ignore[misc]
            if not ok:
                raise value
            yield value
        thread.join()
    finally:
        stop.set()
