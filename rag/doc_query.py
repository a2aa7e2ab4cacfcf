"""Finding documents in the catalog at any size: one page of a knowledge base's documents filtered
by a substring of the source or title, a state and tags, with the number that match, all in SQL on
both backends (rag/db.py), so that a knowledge base of thousands of documents is never read whole.

Tags are also kept as rows (`document_tags`, one per document and key, indexed by key and value):
the JSON `tags` column stays the record, the rows are what filters use; `Catalog` writes both in
the same transaction. A tag filter is `key=value` (`key:value` is accepted too where a caller's
syntax uses it, `DocQuery.parse_tag`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag.errors import InvalidRequest

if TYPE_CHECKING:
    from rag.catalog import DocRecord
    from rag.db import Database

DOC_STATES = ("indexed", "pending", "deleting")
MAX_PAGE = 10_000


def add_tag_rows(db: Database) -> None:
    """Catalog migration 2: the `document_tags` table, filled from the documents' JSON tags, and an
    index for listing by state."""
    db.execute("CREATE TABLE IF NOT EXISTS document_tags (kb TEXT NOT NULL, doc_id TEXT NOT NULL, "
               "tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, PRIMARY KEY (kb, doc_id, tag_key))")
    db.execute("CREATE INDEX IF NOT EXISTS document_tags_pair ON document_tags (kb, tag_key, tag_value)")
    db.execute("CREATE INDEX IF NOT EXISTS documents_state ON documents (kb, state, source)")
    rows = db.query("SELECT kb, doc_id, tags FROM documents")
    db.execute_many("INSERT INTO document_tags (kb, doc_id, tag_key, tag_value) VALUES (?,?,?,?)",
                    [(r["kb"], r["doc_id"], str(k), str(v)) for r in rows for k, v in json.loads(r["tags"]).items()])


def write_tag_rows(db: Database, kb: str, doc_id: str, tags: Mapping[str, str]) -> None:
    """Replace the tag rows of one document (inside the caller's transaction)."""
    db.execute("DELETE FROM document_tags WHERE kb=? AND doc_id=?", (kb, doc_id))
    db.execute_many("INSERT INTO document_tags (kb, doc_id, tag_key, tag_value) VALUES (?,?,?,?)",
                    [(kb, doc_id, str(k), str(v)) for k, v in sorted(tags.items())])


def tag_filter_sql(kb: str, tags: Sequence[str]) -> tuple[str, list[Any]]:
    """` AND ...` conditions on `documents` of `kb` for `key=value` tags that must all be present
    (uncorrelated subqueries on the (kb, key, value) index)."""
    sql, args = "", []
    for tag in dict.fromkeys(tags):
        key, _, value = tag.partition("=")
        sql += " AND doc_id IN (SELECT doc_id FROM document_tags WHERE kb=? AND tag_key=? AND tag_value=?)"
        args += [kb, key, value]
    return sql, args


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards escaped (with `\\`)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class DocQuery:
    """Which documents of a knowledge base, and which page of them."""

    q: str = ""  # a substring of the source or the title, any case
    state: str | None = None
    tags: tuple[str, ...] = ()  # key=value, all must match
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in DOC_STATES:
            raise InvalidRequest(f"invalid state {self.state!r}: use one of {', '.join(DOC_STATES)}", field="state")
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidRequest(f"invalid limit {self.limit}: use 1 to {MAX_PAGE}", field="limit")
        if self.offset < 0:
            raise InvalidRequest(f"invalid offset {self.offset}: use 0 or more", field="offset")

    @staticmethod
    def parse_tag(text: str, field_name: str = "tag") -> str:
        """`key=value` (or `key:value`) -> `key=value`; InvalidRequest naming `field_name` otherwise."""
        sep = "=" if "=" in text else ":"
        key, found, value = text.partition(sep)
        if not found or not key.strip() or not value.strip():
            raise InvalidRequest(f"invalid tag filter {text!r}: use key=value (or key:value)", field=field_name)
        return f"{key.strip()}={value.strip()}"

    def where_sql(self, kb: str) -> tuple[str, list[Any]]:
        sql, args = "kb=?", [kb]
        if self.q.strip():
            sql += " AND (LOWER(source) LIKE ? ESCAPE '\\' OR LOWER(title) LIKE ? ESCAPE '\\')"
            args += [_like(self.q.strip())] * 2
        if self.state:
            sql += " AND state=?"
            args.append(self.state)
        tags_sql, tag_args = tag_filter_sql(kb, self.tags)
        return sql + tags_sql, args + tag_args


@dataclass
class DocPage:
    total: int  # how many documents match (all pages)
    docs: list[DocRecord] = field(default_factory=list)
