"""API keys: the admin key comes from the environment (`RAG_API_ADMIN_KEY`); other keys are created
through `/v1/keys` (or `rag keys create`) and stored as SHA-256 hashes in SQLite
(`<data_dir>/api_keys.sqlite`) or in the PostgreSQL catalog (`RAG_CATALOG_URL`, rag/db.py); the plain
key is shown once, at creation.

Each key lists the knowledge bases it may read and those it may write (`"*"` = all); writing
implies reading. The admin key may do everything, including managing keys. With
`RAG_AUTH_DISABLED=true` every request acts as the admin (for local use; logged loudly)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from api.errors import Forbidden, Unauthorized
from rag.errors import InvalidRequest, NotFound
from rag.db import Database, Row

KEY_PREFIX = "rag-"
_KB_OR_STAR = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
MIGRATIONS = [
    ("""CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        read_kbs TEXT NOT NULL,
        write_kbs TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",),  # 1: the schema before versioning
]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_kb_list(values: Sequence[str], field_name: str) -> tuple[str, ...]:
    out = []
    for value in values:
        if not isinstance(value, str) or not _KB_OR_STAR.match(value):
            raise InvalidRequest(f"{field_name}: {value!r} is neither '*' nor a knowledge base name", field=field_name)
        out.append(value)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may touch."""

    key_id: str
    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    admin: bool = False

    def can_write(self, kb: str) -> bool:
        return self.admin or "*" in self.write or kb in self.write

    def can_read(self, kb: str) -> bool:
        return self.can_write(kb) or "*" in self.read or kb in self.read

    def require_read(self, kb: str) -> None:
        if not self.can_read(kb):
            raise Forbidden(f"this API key may not read knowledge base {kb!r}", field="kb")

    def require_write(self, kb: str) -> None:
        if not self.can_write(kb):
            raise Forbidden(f"this API key may not write knowledge base {kb!r}", field="kb")

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden("only the admin key (RAG_API_ADMIN_KEY) may manage API keys")


ADMIN = Principal("admin", "admin (RAG_API_ADMIN_KEY)", ("*",), ("*",), admin=True)
ANONYMOUS = Principal("anonymous", "anonymous (RAG_AUTH_DISABLED=true)", ("*",), ("*",), admin=True)


@dataclass
class KeyRecord:
    id: str
    name: str
    prefix: str
    read: list[str]
    write: list[str]
    created_at: float
    secret: str | None = field(default=None, repr=False)  # only right after creation

    def principal(self) -> Principal:
        return Principal(self.id, self.name, tuple(self.read), tuple(self.write))


class ApiKeyStore:
    """The keys, in a `Database` (a SQLite path, a PostgreSQL URL or an open Database)."""

    def __init__(self, target: Database | str | Path) -> None:
        self.db = Database.of(target)
        self.db.migrate("api_keys", MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def _record(row: Row) -> KeyRecord:
        return KeyRecord(row["id"], row["name"], row["prefix"], json.loads(row["read_kbs"]),
                         json.loads(row["write_kbs"]), row["created_at"])

    def create(self, name: str, read: Sequence[str] = (), write: Sequence[str] = ()) -> KeyRecord:
        """A new key; the returned record carries the plain secret (never stored)."""
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise InvalidRequest("a key needs a name of 1-200 characters", field="name")
        read_kbs, write_kbs = check_kb_list(read, "read"), check_kb_list(write, "write")
        if not read_kbs and not write_kbs:
            raise InvalidRequest("a key must be allowed to read or write at least one knowledge base "
                                 "(use '*' for all)", field="read")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord("key_" + secrets.token_hex(6), name, secret[:10], list(read_kbs), list(write_kbs),
                           time.time(), secret)
        self.db.execute("INSERT INTO api_keys (id, name, hash, prefix, read_kbs, write_kbs, created_at) "
                        "VALUES (?,?,?,?,?,?,?)", (record.id, record.name, hash_key(secret), record.prefix,
                                                   json.dumps(record.read), json.dumps(record.write), record.created_at))
        return record

    def list(self) -> list[KeyRecord]:
        return [self._record(r) for r in self.db.query("SELECT * FROM api_keys ORDER BY created_at")]

    def get(self, key_id: str) -> KeyRecord:
        row = self.db.one("SELECT * FROM api_keys WHERE id=?", (key_id,))
        if row is None:
            raise NotFound(f"unknown API key id {key_id!r}", field="key_id")
        return self._record(row)

    def revoke(self, key_id: str) -> None:
        if not self.db.execute("DELETE FROM api_keys WHERE id=?", (key_id,)):
            raise NotFound(f"unknown API key id {key_id!r}", field="key_id")

    def lookup(self, secret: str) -> KeyRecord | None:
        row = self.db.one("SELECT * FROM api_keys WHERE hash=?", (hash_key(secret),))
        return self._record(row) if row else None

    def count(self) -> int:
        return int(self.db.one("SELECT COUNT(*) AS n FROM api_keys")["n"])


class Authenticator:
    """Turns the request's credentials into a Principal, or raises Unauthorized."""

    def __init__(self, store: ApiKeyStore, admin_key: str | None, disabled: bool) -> None:
        self.store = store
        self.admin_key = admin_key or None
        self.disabled = disabled

    def authenticate(self, bearer: str | None, header_key: str | None) -> Principal:
        if self.disabled:
            return ANONYMOUS
        secret = (bearer or header_key or "").strip()
        if not secret:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
        if self.admin_key and hmac.compare_digest(secret.encode(), self.admin_key.encode()):
            return ADMIN
        record = self.store.lookup(secret)
        if record is None:
            raise Unauthorized("unknown or revoked API key")
        return record.principal()
