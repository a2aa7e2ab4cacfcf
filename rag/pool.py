"""Database connections lent to threads (`ConnectionPool`): the relational stores (rag/db.py) and the
pgvector store (rag/adapters/pgvector_store.py) share it.

Up to `size` connections, opened as threads need them and kept for the next ones. A thread asks
for one for a statement (`connection`) or keeps one for a whole transaction (`holding`: nested calls
of that thread get the same connection, so they join its transaction). Connections are lent in
the order threads asked (`_FairSlots`). A connection found broken when lent is replaced; one that
broke while lent (the server restarted or dropped it) is closed when given back, with every idle one
(they are gone too), so the next statements open new ones."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class _FairSlots:
    """A counting semaphore that lends in arrival order: a slot given back goes to the longest
    waiting thread (handed over), never to the thread that gave it back and asks again at once.
    Python's own Semaphore lets that thread win, and one busy thread then starves the others for
    seconds (benchmarks/pg_concurrency.py measured 10 s waits with 4 threads on one connection)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()
        self._waiters: deque[threading.Event] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # set by `__exit__` of the holder that handed its slot over

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1


class ConnectionPool:
    """Up to `size` connections made by `opener`; `broken(conn)` says one can no longer be used
    (None: never). `first`: a connection opened already (a database that cannot be reached fails
    when the pool is made, not at its first use)."""

    def __init__(self, opener: Callable[[], Any], size: int, *, broken: Callable[[Any], bool] | None = None,
                 first: Any = None) -> None:
        if size < 1:
            raise ValueError(f"a connection pool needs at least one connection, got {size}")
        self.size = size
        self._open = opener
        self._broken = broken or (lambda conn: False)
        self._slots = _FairSlots(size)
        self._lock = threading.Lock()
        self._idle: list[Any] = [first] if first is not None else []
        self._held = threading.local()  # .conn: the connection this thread keeps (`holding`)
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for one statement: the one this thread holds, else one lent (waiting, in
        turn, while all are lent) and given back after."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or self._broken(conn):
                if conn is not None:
                    conn.close()
                conn = self._open()
            try:
                yield conn
            finally:
                self._give_back(conn)

    @contextmanager
    def holding(self) -> Iterator[tuple[Any, bool]]:
        """A connection this thread keeps until the block ends, and whether it was held already (a
        nested call: the outer block gives it back)."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held, True
            return
        with self.connection() as conn:
            self._held.conn = conn
            try:
                yield conn, False
            finally:
                self._held.conn = None

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            if self._closed:
                conn.close()
            elif self._broken(conn):  # the server went away: the idle ones are gone too
                log.warning("a database connection broke: closing it and the %d idle one(s)", len(self._idle))
                conn.close()
                for idle in self._idle:
                    idle.close()
                self._idle = []
            else:
                self._idle.append(conn)

    def close(self) -> None:
        """Close the connections (those lent now when they come back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
