"""The one way this service reaches its relational state (catalog, version families, API keys,
conversations, jobs): a SQLite file (the embedded default, one file per store in the data folder) or
a PostgreSQL database (`RAG_CATALOG_URL=postgresql://...`, shared by every store and every replica).

The stores write one SQL for both: `?` placeholders, column types SQLite maps by affinity
(`DOUBLE PRECISION`, `BIGINT`), `INSERT ... ON CONFLICT ... DO UPDATE`, and no JSON functions
(`json_len` is the one place the dialects differ). A `Database` lends its store's threads
connections: a SQLite file has one, shared and serialised (SQLite writes one at a time anyway); a
PostgreSQL database up to `pool_size` (RAG_PG_POOL_SIZE), opened as threads need them, so the reads of
concurrent requests run side by side. A thread inside a transaction keeps its connection until the
transaction ends (nested calls join it). A statement that finds its PostgreSQL connection broken (the
server restarted, the connection was killed) fails, and the pool's idle connections are closed with
it: the next statements open new ones.

Schemas are versioned per component (`schema_versions`): a store passes its ordered migration steps
to `migrate`, which applies those the database has not seen, in one transaction (on PostgreSQL
under an advisory lock, so replicas starting together migrate once). Step 1 of each component is
the schema as it was before versioning, written with IF NOT EXISTS, so an existing SQLite file is
adopted as it is."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Union

import psycopg
from psycopg.rows import dict_row

from rag.errors import InvalidRequest, RagError
from rag.pool import ConnectionPool
from rag.redact import is_postgres_url, redact_url

# what a failing database raises, for the edges that report it (readiness, CLI)
DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, psycopg.Error)
# what a PostgreSQL that is away (restarting, unreachable, the connection dropped) raises: the API
# answers 503 with Retry-After, and the pool opens new connections for the next statements
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError,)
CONNECT_TIMEOUT_S = 10  # a PostgreSQL that does not answer fails the call instead of hanging it
DEFAULT_POOL_SIZE = 4  # PostgreSQL connections of one store in one process (RAG_PG_POOL_SIZE)
_MIGRATION_LOCK = 7_233_001  # pg_advisory_xact_lock key while a release migrates the schema

Row = Any  # sqlite3.Row or dict: both read by column name
Step = Union[Sequence[str], Callable[["Database"], None]]


def _wal(conn: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Put a SQLite file in WAL mode. Switching a new file takes an exclusive lock that SQLite does
    not wait for (no busy handler on that path): processes opening the same new file at once get
    "database is locked", so try again until one of them has switched it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SchemaTooNew(RagError):
    """The database was migrated by a newer release than this one."""


class Database:
    """The connections to a SQLite file or a PostgreSQL database; see the module docstring."""

    def __init__(self, target: str | Path, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.target = target
        self.dialect = "postgresql" if is_postgres_url(target) else "sqlite"
        self.pool_size = pool_size if self.postgres else 1  # ConnectionPool refuses less than one
        # one connection opened now: a database that cannot be reached fails here
        self._pool = ConnectionPool(self._open, self.pool_size, first=self._open(),
                                    broken=(lambda c: c.closed or c.broken) if self.postgres else None)
        self._translated: dict[str, str] = {}
        self._migrated: set[str] = set()

    @classmethod
    def of(cls, target: Database | str | Path) -> Database:
        """`target` itself when it is a Database, else one opened on the path or URL."""
        return target if isinstance(target, Database) else cls(target)

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def label(self) -> str:
        """Where this database is, for messages (a URL without its password)."""
        return redact_url(self.target) if self.postgres else str(self.target)

    def _open(self) -> Any:
        if self.postgres:
            return psycopg.connect(str(self.target), autocommit=True, row_factory=dict_row,
                                   connect_timeout=CONNECT_TIMEOUT_S)
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        _wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _connection(self) -> AbstractContextManager[Any]:
        """A connection for one statement: the thread's transaction's, else one lent from the pool."""
        return self._pool.connection()

    def close(self) -> None:
        """Close the connections (those lent now when they come back)."""
        self._pool.close()

    # statements ----------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        if not self.postgres:
            return sql
        out = self._translated.get(sql)
        if out is None:
            out = self._translated[sql] = sql.replace("%", "%%").replace("?", "%s")
        return out

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """All rows of a SELECT, read by column name."""
        with self._connection() as conn:
            return conn.execute(self._sql(sql), tuple(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._connection() as conn:
            return conn.execute(self._sql(sql), tuple(params)).fetchone()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self._connection() as conn:
            return conn.execute(self._sql(sql), tuple(params)).rowcount

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._connection() as conn:
            if self.postgres:
                with conn.cursor() as cur:
                    cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            else:
                conn.executemany(sql, [tuple(r) for r in rows])

    def upsert(self, table: str, row: dict[str, Any], key: Sequence[str]) -> None:
        """Insert `row`, or replace the columns it names in the row with the same `key`."""
        cols = list(row)
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in key) or f"{key[0]}=excluded.{key[0]}"
        self.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                     f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}", [row[c] for c in cols])

    def json_len(self, column: str) -> str:
        """The SQL length of a JSON array stored as text in `column`."""
        return f"json_array_length({column}::json)" if self.postgres else f"json_array_length({column})"

    @property
    def for_update(self) -> str:
        """The row-lock suffix of a SELECT inside `transaction` (SQLite's write transaction is
        exclusive already)."""
        return " FOR UPDATE" if self.postgres else ""

    # transactions --------------------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[Database]:
        """One write transaction (nested calls join the outer one). SQLite takes its write lock at
        the start (BEGIN IMMEDIATE); PostgreSQL locks rows as they are written (`for_update` for a
        read that the transaction then writes)."""
        return self._scope("BEGIN IMMEDIATE", None)

    def snapshot(self) -> AbstractContextManager[Database]:
        """Several reads that see one state of the database (inside a transaction: that one's)."""
        return self._scope("BEGIN", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

    @contextmanager
    def _scope(self, begin: str, first: str | None) -> Iterator[Database]:
        """A transaction on a connection this thread keeps until it ends (SQLite: opened by `begin`;
        PostgreSQL: `first` is its first statement), or a part of the one the thread has open."""
        with self._pool.holding() as (conn, nested):
            if nested:
                yield self
            elif self.postgres:
                with conn.transaction():
                    if first:
                        conn.execute(first)
                    yield self
            else:
                conn.execute(begin)
                try:
                    yield self
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    # schema --------------------------------------------------------------------------------------
    def schema_version(self, component: str) -> int:
        self.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        row = self.one("SELECT version FROM schema_versions WHERE component=?", (component,))
        return int(row["version"]) if row else 0

    def migrate(self, component: str, steps: Sequence[Step]) -> int:
        """Apply the steps of `component` this database has not seen (step i brings it to version i),
        in one transaction; returns the version. Refuses a database a newer release migrated. Once per
        component and Database: later calls return at once."""
        if component in self._migrated:
            return len(steps)
        with self.transaction():
            if self.postgres:
                self.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            version = self.schema_version(component)
            if version > len(steps):
                raise SchemaTooNew(f"the {component} schema in {self.label} is at version {version}, newer than this "
                                   f"release knows ({len(steps)}): run the newer release, or restore a backup")
            for step in steps[version:]:
                if callable(step):
                    step(self)
                else:
                    for statement in step:
                        self.execute(statement)
            if len(steps) > version:
                self.upsert("schema_versions", {"component": component, "version": len(steps)}, ("component",))
        self._migrated.add(component)
        return len(steps)


def copy_rows(source: Database, target: Database, tables: Sequence[str]) -> dict[str, int]:
    """Copy every row of `tables` (migrated on both sides) from `source` into `target`, in one
    transaction of the target; the number of rows per table. Refuses a target table that holds
    rows already (a copy is made once, into an empty database)."""
    counts: dict[str, int] = {}
    with target.transaction():
        for table in tables:
            if target.one(f"SELECT 1 AS held FROM {table} LIMIT 1") is not None:
                raise InvalidRequest(f"table {table} of {target.label} holds rows already: copy into an empty "
                                     "database", field="to")
            rows = source.query(f"SELECT * FROM {table}")
            if rows:
                columns = list(rows[0].keys())
                target.execute_many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                    f"({', '.join('?' * len(columns))})", [[r[c] for c in columns] for r in rows])
            counts[table] = len(rows)
    return counts
