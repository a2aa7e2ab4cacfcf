"""The one way this service opens its SQLite files (catalog, API keys, conversations, jobs)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


def connect(path: Path, schema: str, *, pragmas: Sequence[str] = (), rows: bool = True) -> sqlite3.Connection:
    """An autocommit connection that threads may share (callers serialise with their own lock), in
    WAL mode so readers in other processes are not blocked, with `schema` applied; the folder is
    created. `rows`: rows as `sqlite3.Row` (by name and by index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    if rows:
        conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    conn.executescript(schema)
    return conn
