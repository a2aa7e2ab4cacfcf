"""The connections a `Database` lends on a real PostgreSQL (rag/db.py): a read of one thread runs
while another thread's transaction is open (it waited for it before the pool), a transaction keeps
one connection for its nested calls and its writes are seen by others only once committed, no more
than `pool_size` connections are opened whatever the number of threads, connections the server
dropped are replaced after the one statement that found them gone, connections are lent in the
order threads asked (a thread that gives one back and asks again waits its turn), and a SQLite file
keeps one connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager

import psycopg
import pytest

from rag.db import Database


@pytest.fixture
def db(pg_url):
    database = Database(pg_url, pool_size=3)
    database.execute("CREATE TABLE items (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    yield database
    database.close()


def _backends(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchone()[0]


@contextmanager
def held_elsewhere(scope: Callable[[], AbstractContextManager], inside: Callable[[], None] = lambda: None):
    """Another thread opens `scope()` and calls `inside` in it; the block runs while it stays open."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with scope():
            inside()
            entered.set()
            assert release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_a_read_runs_while_another_threads_transaction_is_open(db):
    def write() -> None:
        db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("kettle", 1))
        assert db.one("SELECT n FROM items WHERE name=?", ("kettle",))["n"] == 1  # its own write, nested

    with held_elsewhere(db.transaction, write):
        assert db.one("SELECT count(*) AS n FROM items")["n"] == 0  # answered now, and not yet committed
    assert db.one("SELECT n FROM items WHERE name=?", ("kettle",))["n"] == 1


def all_at_once(db: Database, n: int) -> list[int]:
    """`n` threads, each keeping a connection (a transaction) until all `n` hold one."""
    barrier = threading.Barrier(n, timeout=10)

    def hold(i: int) -> int:
        with db.transaction():
            value = db.one("SELECT ? AS i", (i,))["i"]
            barrier.wait()
        return value

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(hold, range(n)))


def test_no_more_connections_than_the_pool_size(db, pg_url):
    assert all_at_once(db, 3) == [0, 1, 2]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: db.one("SELECT pg_sleep(0.02), ? AS i", (i,)), range(40)))
    assert _backends(pg_url) == 3


def test_connections_the_server_dropped_are_replaced(db, pg_url):
    db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("cup", 2))
    all_at_once(db, 3)  # three connections open, then idle
    assert _backends(pg_url) == 3
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid()")
    with pytest.raises(psycopg.OperationalError):  # the statement that finds it dropped fails ...
        db.one("SELECT n FROM items WHERE name=?", ("cup",))
    assert all_at_once(db, 3) == [0, 1, 2]  # ... the next ones get new ones, not the other dropped ones


def test_a_failed_transaction_leaves_nothing_and_frees_its_connection(db):
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("pot", 3))
            raise RuntimeError("stop")
    assert db.one("SELECT count(*) AS n FROM items")["n"] == 0
    assert all_at_once(db, 3) == [0, 1, 2]  # all three connections can be lent again


def test_sqlite_keeps_one_connection(tmp_path):
    db = Database(tmp_path / "one.sqlite", pool_size=8)
    assert db.pool_size == 1
    db.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: db.execute("INSERT INTO items (name) VALUES (?)", (f"n{i}",)), range(20)))
    assert db.one("SELECT count(*) AS n FROM items")["n"] == 20
    db.close()


def test_a_connection_given_back_goes_to_the_thread_waiting_longest(pg_url):
    db = Database(pg_url, pool_size=1)
    order: list[str] = []

    def use(name: str) -> None:
        with db.transaction():  # the name is written while the connection is this thread's
            order.append(name)

    with db.transaction():
        waiter = threading.Thread(target=use, args=("waiter",))
        waiter.start()
        deadline = time.monotonic() + 10
        while not db._pool._slots._waiters and time.monotonic() < deadline:  # the waiter is in the queue
            time.sleep(0.01)
    use("holder")  # gave it back and asks again at once
    waiter.join()
    assert order == ["waiter", "holder"]
    db.close()
