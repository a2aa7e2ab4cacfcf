"""Server-side chat history for `/v1/chat`, in SQLite (`<data_dir>/conversations.sqlite`).

A conversation belongs to the API key that started it; other keys see it as unknown (404), the
admin sees all. A turn (the user message and the assistant's answer with its citations and
sources) is written in one transaction once the answer is complete, so a failed or interrupted
generation leaves no half turn behind and can simply be asked again."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import InvalidRequest, NotFound
from rag.db import Database, Row

CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIGRATIONS = [
    (  # 1: the schema before versioning
        """CREATE TABLE IF NOT EXISTS conversations (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            kb TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS messages (
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (conversation_id, seq)
        )""",
        "CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (owner, updated_at)",
    ),
]


@dataclass
class Message:
    role: str
    content: str
    created_at: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversation:
    id: str
    owner: str
    kb: str
    title: str
    created_at: float
    updated_at: float
    messages: list[Message] = field(default_factory=list)


def new_conversation_id() -> str:
    return "conv_" + uuid.uuid4().hex


def check_conversation_id(conversation_id: str) -> str:
    if not isinstance(conversation_id, str) or not CONVERSATION_ID_RE.match(conversation_id):
        raise InvalidRequest(f"invalid conversation id {conversation_id!r}: use 1-64 letters, digits, '_' or '-'",
                             field="conversation_id")
    return conversation_id


class ConversationStore:
    """Conversations in a `Database` (a SQLite path, a PostgreSQL URL or an open Database)."""

    def __init__(self, target: Database | str | Path) -> None:
        self.db = Database.of(target)
        self.db.migrate("conversations", MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    def _row(self, conversation_id: str) -> Row | None:
        return self.db.one("SELECT * FROM conversations WHERE id=?", (conversation_id,))

    @staticmethod
    def _visible(row: Row | None, owner: str, admin: bool) -> bool:
        return row is not None and (admin or row["owner"] == owner)

    def get(self, conversation_id: str, owner: str, admin: bool = False, *, last: int | None = None) -> Conversation:
        """The conversation with its messages (only the `last` ones when given). NotFound for an
        unknown id or one started by another key."""
        check_conversation_id(conversation_id)
        with self.db.snapshot() as db:
            row = self._row(conversation_id)
            if not self._visible(row, owner, admin):
                raise NotFound(f"unknown conversation {conversation_id!r}", field="conversation_id")
            rows = db.query("SELECT * FROM messages WHERE conversation_id=? ORDER BY seq", (conversation_id,))
        if last is not None:
            rows = rows[-last:] if last > 0 else []
        messages = [Message(r["role"], r["content"], r["created_at"], json.loads(r["meta"])) for r in rows]
        return Conversation(row["id"], row["owner"], row["kb"], row["title"], row["created_at"], row["updated_at"],
                            messages)

    def exists_for(self, conversation_id: str, owner: str, admin: bool = False) -> bool:
        """True if visible to this caller; NotFound when it exists but belongs to another key."""
        check_conversation_id(conversation_id)
        row = self._row(conversation_id)
        if row is None:
            return False
        if not self._visible(row, owner, admin):
            raise NotFound(f"unknown conversation {conversation_id!r}", field="conversation_id")
        return True

    def history(self, conversation_id: str, owner: str, admin: bool = False, last: int = 20) -> list[dict[str, str]]:
        """The last messages as pipeline history; [] for a conversation that does not exist yet."""
        if not self.exists_for(conversation_id, owner, admin):
            return []
        conv = self.get(conversation_id, owner, admin, last=last)
        return [{"role": m.role, "content": m.content} for m in conv.messages]

    def add_turn(self, conversation_id: str, owner: str, kb: str, question: str, answer: str,
                 meta: dict[str, Any] | None = None) -> None:
        """Append a user message and the assistant's answer, creating the conversation if needed."""
        check_conversation_id(conversation_id)
        now = time.time()
        with self.db.transaction() as db:
            # the upsert locks the conversation's row: turns added at once (by any replica) take turns
            db.execute("INSERT INTO conversations (id, owner, kb, title, created_at, updated_at) VALUES (?,?,?,?,?,?) "
                       "ON CONFLICT (id) DO UPDATE SET updated_at=excluded.updated_at, kb=excluded.kb",
                       (conversation_id, owner, kb, question.strip()[:120], now, now))
            seq = db.one("SELECT COALESCE(MAX(seq), 0) AS seq FROM messages WHERE conversation_id=?",
                         (conversation_id,))["seq"]
            insert = "INSERT INTO messages (conversation_id, seq, role, content, meta, created_at) VALUES (?,?,?,?,?,?)"
            db.execute(insert, (conversation_id, seq + 1, "user", question, json.dumps({"kb": kb}), now))
            db.execute(insert, (conversation_id, seq + 2, "assistant", answer, json.dumps(meta or {}, ensure_ascii=False),
                                now))

    def list(self, owner: str, admin: bool = False, limit: int = 50, offset: int = 0) -> list[Conversation]:
        query, args = "SELECT * FROM conversations", []
        if not admin:
            query, args = query + " WHERE owner=?", [owner]
        rows = self.db.query(query + " ORDER BY updated_at DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        return [Conversation(r["id"], r["owner"], r["kb"], r["title"], r["created_at"], r["updated_at"]) for r in rows]

    def delete(self, conversation_id: str, owner: str, admin: bool = False) -> None:
        check_conversation_id(conversation_id)
        with self.db.transaction() as db:
            row = self._row(conversation_id)
            if not self._visible(row, owner, admin):
                raise NotFound(f"unknown conversation {conversation_id!r}", field="conversation_id")
            db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))
