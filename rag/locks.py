"""The write lock of a knowledge base: one writer per knowledge base across threads, processes and,
with the PostgreSQL catalog, hosts.

Taken only through `KnowledgeBases.writing(name)` (rag/kb.py); this module holds the mechanism:
`WriteLocks` (a `flock` on `<folder>/<kb>.lock`, one host) and `PgWriteLocks` (a PostgreSQL
session advisory lock, any number of hosts: the server releases it when the holder's connection
ends, so a killed replica never leaves a knowledge base locked)."""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from rag.db import CONNECT_TIMEOUT_S
from rag.errors import Busy

LOCK_NAMESPACE = 0x52414700  # "RAG\0": the first key of every advisory lock this service takes


class WriteLocks:
    """One writer per knowledge base: a thread lock (shared by every lock object of this process
    over the same place) and an outer lock for other processes (`_outer`: here an exclusive `flock`
    on `<folder>/<kb>.lock`). Re-entrant in the holding thread: a caller may take the lock before
    opening the stores, and the knowledge-base operation it calls takes it again without blocking
    itself."""

    _threads: dict[str, threading.RLock] = {}
    _depth: dict[str, int] = {}
    _guard = threading.Lock()

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _key(self, kb: str) -> str:
        """What names the lock of `kb` within this process."""
        return str((self.folder / f"{kb}.lock").absolute())

    @contextmanager
    def hold(self, kb: str, wait: bool = True) -> Iterator[None]:
        """Hold the write lock of `kb`; without `wait`, raise Busy when someone else holds it."""
        key = self._key(kb)
        with self._guard:
            tlock = self._threads.setdefault(key, threading.RLock())
        if not tlock.acquire(blocking=wait):
            raise Busy(f"knowledge base {kb!r} is being written by another job", field="kb")
        try:
            if self._depth.get(key, 0):  # this thread holds it already (and the outer lock with it)
                self._depth[key] += 1
                try:
                    yield
                finally:
                    self._depth[key] -= 1
                return
            with self._outer(kb, wait):
                self._depth[key] = 1
                try:
                    yield
                finally:
                    self._depth[key] = 0
        finally:
            tlock.release()

    @contextmanager
    def _outer(self, kb: str, wait: bool) -> Iterator[None]:
        path = self.folder / f"{kb}.lock"
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise Busy(f"knowledge base {kb!r} is being written by another process", field="kb") from exc
            yield

    def _maybe_held(self, kb: str) -> bool:
        """False when nobody can hold the lock of `kb` (a shortcut for `held_elsewhere`)."""
        return (self.folder / f"{kb}.lock").exists()

    def held_elsewhere(self, kb: str) -> bool:
        """Whether another thread or process holds the write lock of `kb` now (creates no lock file)."""
        if not self._maybe_held(kb):
            return False
        try:
            with self.hold(kb, wait=False):
                return False
        except Busy:
            return True


def advisory_key(kb: str) -> int:
    """The second key of `kb`'s advisory lock: 32 bits of the SHA-256 of its name (two names that
    collide only share a lock, which serialises them; it never lets two writers in)."""
    return int.from_bytes(hashlib.sha256(kb.encode("utf-8")).digest()[:4], "big", signed=True)


class PgWriteLocks(WriteLocks):
    """`WriteLocks` whose outer lock is a PostgreSQL session advisory lock, held on a connection of
    its own for as long as the write lasts: replicas on any host that share the database exclude
    each other, and a replica that dies (kill -9, a lost host) loses the lock with its connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.folder = Path("/")  # unused: the thread locks are keyed by the database (see `_key`)

    def _key(self, kb: str) -> str:
        return f"pg:{self.url}:{kb}"

    def _maybe_held(self, kb: str) -> bool:
        return True

    @contextmanager
    def _outer(self, kb: str, wait: bool) -> Iterator[None]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            key = (LOCK_NAMESPACE, advisory_key(kb))
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
            elif not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]:
                raise Busy(f"knowledge base {kb!r} is being written by another process or replica", field="kb")
            try:
                yield
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def write_locks(folder: Path, catalog_url: str | None) -> WriteLocks:
    """The write locks of a deployment: advisory locks with a PostgreSQL catalog, else file locks."""
    return PgWriteLocks(catalog_url) if catalog_url else WriteLocks(folder)

