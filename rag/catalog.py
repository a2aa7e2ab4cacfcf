"""The catalog: which knowledge bases exist, which model built them, which documents they hold,
with which content hash and which chunk ids. SQLite in WAL mode; every change is one transaction.

A document being (re)indexed is first marked `pending` with the chunk ids it is about to write,
so that after a crash the next run can finish the job and remove whatever a half-done attempt
left in the stores (`ingest.runner` does the recovery).

The catalog is also the source of truth for which chunks queries may see (`live_chunk_ids`): the
`chunk_ids` of indexed documents, and of pending ones their OLD chunk ids (the version being
replaced stays visible until the new one is complete). `mark_indexed` swaps a document's live ids
in one transaction and records the old ids still in the stores as garbage (`pending_ids` of an
indexed row) until `clear_garbage` says they were deleted. Every change of the live set bumps the
knowledge base's generation, so readers in any process can cache the set. A document's
`disabled_ids` (chunks disabled by hand, and their extra vectors) stay out of the live set; the
edits themselves are rows of `chunk_edits` (rag/chunk_edits.py), written with the swap they cause
(`save_chunk_edit`) and deleted with their document.

It lives in `<data_dir>/catalog.sqlite`, or in PostgreSQL with `RAG_CATALOG_URL` (rag/db.py), where
every replica of the API shares it.

A drop first marks the knowledge base `dropping` (in its meta: no schema change), which hides it
from `get_kb` and `list_kbs`; its rows go last, after its indexes (`KnowledgeBases.drop`), so a
killed drop leaves a mark that the next command finishes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag import chunk_edits
from rag.chunk_edits import ChunkEdit
from rag.db import Database, Row
from rag.doc_query import DocPage, DocQuery, add_tag_rows, tag_filter_sql, write_tag_rows
from rag.errors import InvalidRequest, NotFound
from rag.ids import parent_of

KB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

MIGRATIONS = [
    (  # 1: the schema of the SQLite catalog before versioning
        """CREATE TABLE IF NOT EXISTS kbs (
            name TEXT PRIMARY KEY,
            embed_model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            collection TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE IF NOT EXISTS documents (
            kb TEXT NOT NULL,
            doc_id TEXT NOT NULL,
            source TEXT NOT NULL,
            origin TEXT NOT NULL DEFAULT '',
            content_hash TEXT NOT NULL,
            mtime DOUBLE PRECISION NOT NULL,
            size BIGINT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            format TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '{}',
            chunker TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            chunk_ids TEXT NOT NULL DEFAULT '[]',
            pending_ids TEXT NOT NULL DEFAULT '[]',
            ingested_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kb, doc_id)
        )""",
        "CREATE INDEX IF NOT EXISTS documents_source ON documents (kb, source)",
        "CREATE TABLE IF NOT EXISTS generations (kb TEXT PRIMARY KEY, gen BIGINT NOT NULL)",
    ),
    add_tag_rows,  # 2: document_tags, the tags as rows (indexed filters, rag/doc_query.py)
    chunk_edits.SCHEMA,  # 3: chunk_edits, and documents.disabled_ids (rag/chunk_edits.py)
]
_DOC_COLUMNS = ("kb", "doc_id", "source", "origin", "content_hash", "mtime", "size", "title", "format", "tags",
                "chunker", "state", "chunk_ids", "pending_ids", "ingested_at", "disabled_ids")


DROPPING_KEY = "dropping"  # in a knowledge base's meta: when its drop began

# `<kb>__v<n>` names the collection a re-embedded knowledge base moves to (`rag reindex`): no new
# knowledge base may contain it, so that no knowledge base's default collection is another's
COLLECTION_SEP = "__"


def check_kb_name(name: str) -> str:
    if not isinstance(name, str) or not KB_NAME_RE.match(name):
        raise InvalidRequest(f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_', '-' or '.'",
                             field="kb")
    return name


def check_new_kb_name(name: str) -> str:
    """A name a new knowledge base may take: `check_kb_name` and no `__` (existing ones keep theirs)."""
    check_kb_name(name)
    if COLLECTION_SEP in name:
        raise InvalidRequest(f"invalid knowledge base name {name!r}: '{COLLECTION_SEP}' is reserved for the "
                             "collections of re-embedded knowledge bases", field="kb")
    return name


@dataclass
class KbRecord:
    name: str
    embed_model: str
    dim: int
    collection: str
    created_at: float
    meta: dict = field(default_factory=dict)
    dropping: bool = False  # `rag drop` began and did not finish: `KnowledgeBases` finishes it


@dataclass
class DocRecord:
    kb: str
    doc_id: str
    source: str
    origin: str  # the folder the source path is relative to
    content_hash: str
    mtime: float
    size: int
    title: str
    format: str
    tags: dict[str, str]
    chunker: str
    state: str  # "indexed" | "pending" | "deleting"
    chunk_ids: list[str]  # the live ids (for a pending document: those of the version being replaced)
    pending_ids: list[str]  # pending: ids being written; indexed: old ids not yet deleted (garbage)
    ingested_at: float
    disabled_ids: list[str] = field(default_factory=list)  # of `chunk_ids`: disabled by hand, never retrieved


class Catalog:
    """The catalog over a `Database`: a SQLite path, a PostgreSQL URL or an open Database."""

    def __init__(self, target: Database | str | Path) -> None:
        self.db = Database.of(target)
        self.db.migrate("catalog", MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    # knowledge bases -------------------------------------------------------------------------
    def create_kb(self, name: str, embed_model: str, dim: int, collection: str, meta: dict | None = None) -> KbRecord:
        check_new_kb_name(name)
        rec = KbRecord(name, embed_model, dim, collection, time.time(), meta or {})
        with self.db.transaction() as db:
            self._refuse_shared_collection(db, name, collection)
            if db.one("SELECT name FROM kbs WHERE name=?", (name,)) is not None:
                raise InvalidRequest(f"knowledge base {name!r} already exists", field="kb")
            db.execute("INSERT INTO kbs (name, embed_model, dim, collection, created_at, meta) VALUES (?,?,?,?,?,?)",
                       (rec.name, rec.embed_model, rec.dim, rec.collection, rec.created_at, json.dumps(rec.meta)))
        return rec

    def _kb_record(self, name: str) -> KbRecord | None:
        row = self.db.one("SELECT * FROM kbs WHERE name=?", (name,))
        if row is None:
            return None
        meta = json.loads(row["meta"])
        dropping = isinstance(meta, dict) and meta.pop(DROPPING_KEY, None) is not None
        return KbRecord(row["name"], row["embed_model"], row["dim"], row["collection"], row["created_at"], meta,
                        dropping)

    def get_kb(self, name: str) -> KbRecord | None:
        """The knowledge base `name`; None when there is none or it is being dropped."""
        rec = self._kb_record(name)
        return None if rec is None or rec.dropping else rec

    def get_dropping(self, name: str) -> KbRecord | None:
        """The record of `name` when a drop of it began and did not finish."""
        rec = self._kb_record(name)
        return rec if rec is not None and rec.dropping else None

    def dropping_kbs(self) -> list[KbRecord]:
        """Knowledge bases whose drop began and did not finish (a killed `rag drop`)."""
        names = [r["name"] for r in self.db.query("SELECT name FROM kbs ORDER BY name")]
        return [rec for rec in (self.get_dropping(n) for n in names) if rec is not None]

    def mark_dropping(self, name: str) -> None:
        """The first step of a drop, in one transaction: the knowledge base disappears from `get_kb`
        and `list_kbs` at once; its rows stay until its indexes are deleted (`delete_kb`)."""
        with self.db.transaction() as db:
            row = db.one("SELECT meta FROM kbs WHERE name=?" + db.for_update, (name,))
            if row is None:
                return
            meta = json.loads(row["meta"])
            meta[DROPPING_KEY] = time.time()
            db.execute("UPDATE kbs SET meta=? WHERE name=?", (json.dumps(meta), name))
            self._bump(db, name)

    def update_kb_meta(self, name: str, changes: dict) -> KbRecord:
        """Set top-level keys of a knowledge base's meta (a None value removes the key), in one
        transaction with the row locked, so two edits of different keys both land; NotFound for an
        unknown knowledge base or one being dropped."""
        with self.db.transaction() as db:
            row = db.one("SELECT meta FROM kbs WHERE name=?" + db.for_update, (name,))
            meta = json.loads(row["meta"]) if row is not None else {}
            if row is None or DROPPING_KEY in meta:
                raise NotFound(f"unknown knowledge base {name!r}", field="kb")
            for key, value in changes.items():
                if key == DROPPING_KEY:
                    raise InvalidRequest(f"{key!r} is not a meta key a caller may set", field="meta")
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            db.execute("UPDATE kbs SET meta=? WHERE name=?", (json.dumps(meta, ensure_ascii=False), name))
        return self.require_kb(name)

    def count_docs_ingested_before(self, kb: str, before: float) -> int:
        """Indexed documents of `kb` last (re)indexed before `before` (unix seconds)."""
        row = self.db.one("SELECT COUNT(*) AS n FROM documents WHERE kb=? AND state='indexed' AND ingested_at<?",
                          (kb, before))
        return int(row["n"])

    def collections(self) -> set[str]:
        """The collections the catalog's knowledge bases name (those being dropped included)."""
        return {r["collection"] for r in self.db.query("SELECT collection FROM kbs")}

    def require_kb(self, name: str) -> KbRecord:
        rec = self.get_kb(name)
        if rec is None:
            raise NotFound(f"unknown knowledge base {name!r}", field="kb")
        return rec

    def list_kbs(self) -> list[KbRecord]:
        """The knowledge bases, without those being dropped."""
        names = [r["name"] for r in self.db.query("SELECT name FROM kbs ORDER BY name")]
        return [rec for rec in (self.get_kb(n) for n in names) if rec is not None]

    def collection_owner(self, collection: str) -> str | None:
        """The knowledge base whose vectors live in `collection`, if any."""
        row = self.db.one("SELECT name FROM kbs WHERE collection=?", (collection,))
        return row["name"] if row else None

    @staticmethod
    def _refuse_shared_collection(db: Database, name: str, collection: str) -> None:
        row = db.one("SELECT name FROM kbs WHERE collection=? AND name<>?", (collection, name))
        if row is not None:
            raise InvalidRequest(f"collection {collection!r} belongs to knowledge base {row['name']!r}; a collection "
                                 f"holds exactly one knowledge base, so {name!r} cannot use it", field="kb")

    def update_kb(self, name: str, *, embed_model: str, dim: int, collection: str) -> None:
        with self.db.transaction() as db:
            self._refuse_shared_collection(db, name, collection)
            db.execute("UPDATE kbs SET embed_model=?, dim=?, collection=? WHERE name=?",
                       (embed_model, dim, collection, name))

    def delete_kb(self, name: str) -> None:
        with self.db.transaction() as db:
            db.execute("DELETE FROM document_tags WHERE kb=?", (name,))
            db.execute("DELETE FROM chunk_edits WHERE kb=?", (name,))
            db.execute("DELETE FROM documents WHERE kb=?", (name,))
            db.execute("DELETE FROM kbs WHERE name=?", (name,))
            self._bump(db, name)

    # the live set ----------------------------------------------------------------------------
    @staticmethod
    def _bump(db: Database, kb: str) -> None:
        db.execute("INSERT INTO generations (kb, gen) VALUES (?, 1) ON CONFLICT (kb) DO UPDATE SET gen = generations.gen + 1",
                   (kb,))

    def generation(self, kb: str) -> int:
        """A number that changes whenever the live chunk ids of `kb` may have changed (any process)."""
        row = self.db.one("SELECT gen FROM generations WHERE kb=?", (kb,))
        return int(row["gen"]) if row else 0

    def live_chunk_ids(self, kb: str) -> tuple[int, frozenset[str]]:
        """(generation, the chunk ids queries may see), read in one snapshot: disabled chunks (and
        their extra vectors) left out."""
        with self.db.snapshot() as db:
            row = db.one("SELECT gen FROM generations WHERE kb=?", (kb,))
            rows = db.query("SELECT chunk_ids, disabled_ids FROM documents WHERE kb=? "
                            "AND state IN ('indexed', 'pending')", (kb,))
        ids: set[str] = set()
        for r in rows:
            disabled = set(json.loads(r["disabled_ids"]))
            ids.update(i for i in json.loads(r["chunk_ids"]) if not disabled or parent_of(i) not in disabled)
        return (int(row["gen"]) if row else 0), frozenset(ids)

    def kb_stats(self, name: str) -> dict[str, int]:
        row = self.db.one(f"SELECT COUNT(*) AS docs, COALESCE(SUM({self.db.json_len('chunk_ids')}),0) AS chunks, "
                          "COALESCE(SUM(size),0) AS bytes FROM documents WHERE kb=? AND state='indexed'", (name,))
        return {"documents": int(row["docs"]), "chunks": int(row["chunks"]), "bytes": int(row["bytes"])}

    # documents -------------------------------------------------------------------------------
    def _doc(self, row: Row) -> DocRecord:
        return DocRecord(row["kb"], row["doc_id"], row["source"], row["origin"], row["content_hash"], row["mtime"], row["size"],
                         row["title"], row["format"], json.loads(row["tags"]), row["chunker"], row["state"],
                         json.loads(row["chunk_ids"]), json.loads(row["pending_ids"]), row["ingested_at"],
                         json.loads(row["disabled_ids"]))

    def get_doc(self, kb: str, doc_id: str) -> DocRecord | None:
        row = self.db.one("SELECT * FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id))
        return self._doc(row) if row else None

    def find_doc_by_source(self, kb: str, source: str) -> DocRecord | None:
        row = self.db.one("SELECT * FROM documents WHERE kb=? AND source=?", (kb, source))
        return self._doc(row) if row else None

    def list_docs(self, kb: str, state: str | None = None) -> list[DocRecord]:
        query, args = "SELECT * FROM documents WHERE kb=?", [kb]
        if state:
            query += " AND state=?"
            args.append(state)
        return [self._doc(r) for r in self.db.query(query + " ORDER BY source", args)]

    def page_docs(self, kb: str, query: DocQuery) -> DocPage:
        """One page of `kb`'s documents matching `query` (by source, then doc id) and how many match,
        read in one snapshot; the filters and the page are SQL (indexed), never all rows."""
        where, args = query.where_sql(kb)
        with self.db.snapshot() as db:
            total = db.one(f"SELECT COUNT(*) AS n FROM documents WHERE {where}", args)
            rows = db.query(f"SELECT * FROM documents WHERE {where} ORDER BY source, doc_id LIMIT ? OFFSET ?",
                            [*args, query.limit, query.offset])
        return DocPage(int(total["n"]), [self._doc(r) for r in rows])

    def doc_ids_with_tags(self, kb: str, tags: Sequence[str]) -> list[str]:
        """The documents of `kb` carrying every `key=value` of `tags` now (edits included)."""
        where, args = tag_filter_sql(kb, tags)
        return [r["doc_id"] for r in self.db.query(f"SELECT doc_id FROM documents WHERE kb=?{where} ORDER BY doc_id",
                                                   [kb, *args])]

    def tags_of(self, kb: str, doc_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The current tags of these documents of `kb` (those it holds)."""
        out: dict[str, dict[str, str]] = {}
        ids = list(dict.fromkeys(doc_ids))
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            rows = self.db.query(f"SELECT doc_id, tags FROM documents WHERE kb=? AND doc_id IN "
                                 f"({', '.join('?' * len(part))})", [kb, *part])
            out.update((r["doc_id"], json.loads(r["tags"])) for r in rows)
        return out

    def update_doc_meta(self, kb: str, doc_id: str, *, tags: dict[str, str] | None = None,
                        title: str | None = None) -> DocRecord:
        """Set a document's tags (all of them) and/or title, in one transaction; its chunks keep
        their stored payloads: searches read tags from here (`KnowledgeBase`)."""
        with self.db.transaction() as db:
            row = db.one("SELECT * FROM documents WHERE kb=? AND doc_id=?" + db.for_update, (kb, doc_id))
            if row is None:
                raise NotFound(f"unknown document {doc_id!r} in knowledge base {kb!r}", field="doc_id")
            if tags is not None:
                db.execute("UPDATE documents SET tags=? WHERE kb=? AND doc_id=?",
                           (json.dumps(dict(sorted(tags.items()))), kb, doc_id))
                write_tag_rows(db, kb, doc_id, tags)
            if title is not None:
                db.execute("UPDATE documents SET title=? WHERE kb=? AND doc_id=?", (title, kb, doc_id))
            return self._doc(db.one("SELECT * FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id)))

    def mark_pending(self, doc: DocRecord, pending_ids: Sequence[str]) -> None:
        """Record the intent to write `pending_ids` for this document. Its live chunk ids stay those of
        the version being replaced, so the live set does not change (a document half-removed earlier
        has none: its old ids join the pending ones, deleted with them)."""
        old = self.get_doc(doc.kb, doc.doc_id)
        live_old = old is not None and old.state in ("indexed", "pending")
        chunk_ids = old.chunk_ids if old is not None and live_old else []
        dead_old = set(old.chunk_ids) if old is not None and not live_old else set()
        pending = sorted(set(pending_ids) | set(old.pending_ids if old else []) | dead_old)
        self._write_doc(doc, content_hash=old.content_hash if old else "", state="pending", chunk_ids=chunk_ids,
                        pending_ids=pending, disabled_ids=old.disabled_ids if old is not None and live_old else [])

    def mark_indexed(self, doc: DocRecord, chunk_ids: Sequence[str], garbage: Sequence[str] = (),
                     drop_edits: Sequence[str] = ()) -> None:
        """The swap: `chunk_ids` become the document's live ids (and `doc.disabled_ids` its disabled
        ones) in one transaction, which also deletes the edits `drop_edits` (keys); `garbage` (old
        ids still in the stores, deleted next) stays recorded until `clear_garbage`."""
        with self.db.transaction() as db:
            self.mark_many_indexed([(doc, chunk_ids, garbage)])
            for key in drop_edits:
                db.execute("DELETE FROM chunk_edits WHERE kb=? AND doc_id=? AND chunk_key=?", (doc.kb, doc.doc_id, key))

    def mark_many_indexed(self, items: Sequence[tuple[DocRecord, Sequence[str], Sequence[str]]]) -> None:
        """`mark_indexed` for many documents in one transaction."""
        with self.db.transaction() as db:
            for doc, chunk_ids, garbage in items:
                self._write_doc(doc, content_hash=doc.content_hash, state="indexed", chunk_ids=list(chunk_ids),
                                pending_ids=sorted(set(garbage) - set(chunk_ids)),
                                disabled_ids=[i for i in doc.disabled_ids if i in set(chunk_ids)])
                self._bump(db, doc.kb)

    def _write_doc(self, doc: DocRecord, *, content_hash: str, state: str, chunk_ids: list[str],
                   pending_ids: list[str], disabled_ids: list[str]) -> None:
        values = (doc.kb, doc.doc_id, doc.source, doc.origin, content_hash, doc.mtime, doc.size, doc.title, doc.format,
                  json.dumps(doc.tags), doc.chunker, state, json.dumps(chunk_ids), json.dumps(pending_ids), time.time(),
                  json.dumps(disabled_ids))
        with self.db.transaction() as db:
            db.upsert("documents", dict(zip(_DOC_COLUMNS, values)), ("kb", "doc_id"))
            write_tag_rows(db, doc.kb, doc.doc_id, doc.tags)

    def clear_garbage(self, kb: str, doc_id: str) -> None:
        self.db.execute("UPDATE documents SET pending_ids='[]' WHERE kb=? AND doc_id=? AND state='indexed'", (kb, doc_id))

    def docs_with_garbage(self, kb: str) -> list[DocRecord]:
        """Indexed documents whose old chunks a killed run swapped out but did not delete."""
        rows = self.db.query("SELECT * FROM documents WHERE kb=? AND state='indexed' AND pending_ids<>'[]'", (kb,))
        return [self._doc(r) for r in rows]

    def roll_back_pending(self, kb: str, doc_id: str) -> None:
        """A pending document back to the version it replaces (its live ids and content hash,
        which `mark_pending` kept); the caller deleted the pending ids first."""
        with self.db.transaction() as db:
            db.execute("UPDATE documents SET state='indexed', pending_ids='[]' WHERE kb=? AND doc_id=? AND state='pending'",
                       (kb, doc_id))
            self._bump(db, kb)

    def mark_deleting(self, kb: str, doc_id: str) -> None:
        with self.db.transaction() as db:
            db.execute("UPDATE documents SET state='deleting' WHERE kb=? AND doc_id=?", (kb, doc_id))
            self._bump(db, kb)

    def remove_doc(self, kb: str, doc_id: str) -> None:
        with self.db.transaction() as db:
            db.execute("DELETE FROM document_tags WHERE kb=? AND doc_id=?", (kb, doc_id))
            db.execute("DELETE FROM chunk_edits WHERE kb=? AND doc_id=?", (kb, doc_id))
            db.execute("DELETE FROM documents WHERE kb=? AND doc_id=?", (kb, doc_id))
            self._bump(db, kb)

    def all_chunk_ids(self, kb: str) -> set[str]:
        """The chunk ids the catalog says are indexed (pending documents count with their old ids)."""
        ids: set[str] = set()
        for doc in self.list_docs(kb):
            if doc.state != "deleting":
                ids.update(doc.chunk_ids)
        return ids

    # chunk edits (rag/chunk_edits.py) ----------------------------------------------------------
    def chunk_edits(self, kb: str, doc_id: str) -> list[ChunkEdit]:
        """The edits of one document, oldest first."""
        rows = self.db.query("SELECT * FROM chunk_edits WHERE kb=? AND doc_id=? ORDER BY created_at, chunk_key",
                             (kb, doc_id))
        return [ChunkEdit.from_row(r) for r in rows]

    def chunk_edit(self, kb: str, doc_id: str, key: str) -> ChunkEdit | None:
        row = self.db.one("SELECT * FROM chunk_edits WHERE kb=? AND doc_id=? AND chunk_key=?", (kb, doc_id, key))
        return ChunkEdit.from_row(row) if row else None

    def save_chunk_edit(self, edit: ChunkEdit, chunk_id: str | None, replaces: Sequence[str] = ()) -> DocRecord:
        """Record `edit` and the swap it causes, in one transaction: the chunk `chunk_id` (already in
        the stores) takes the place of `replaces` in its document's live ids (or joins them: a chunk
        added by hand), disabled or not as `edit` says; the replaced ids become garbage (deleted next,
        `clear_garbage`). An edit that changes nothing any more is deleted, and so is the edit of a
        chunk removed (`chunk_id` None: a chunk added by hand, deleted with `replaces`)."""
        with self.db.transaction() as db:
            row = db.one("SELECT * FROM documents WHERE kb=? AND doc_id=?" + db.for_update, (edit.kb, edit.doc_id))
            if row is None:
                raise NotFound(f"unknown document {edit.doc_id!r} in knowledge base {edit.kb!r}", field="doc_id")
            doc = self._doc(row)
            gone = set(replaces) - {chunk_id}
            ids = list(doc.chunk_ids)
            at = next((n for n, i in enumerate(ids) if i in gone), len(ids))
            kept = [chunk_id] if chunk_id is not None else []
            ids = [i for i in ids[:at] if i not in gone] + kept + [i for i in ids[at:] if i not in gone]
            ids = list(dict.fromkeys(ids))
            disabled = [i for i in doc.disabled_ids if i not in gone and i != chunk_id]
            disabled += kept if edit.disabled else []
            pending = sorted((set(doc.pending_ids) | gone) - set(ids))
            db.execute("UPDATE documents SET chunk_ids=?, pending_ids=?, disabled_ids=?, state='indexed' "
                       "WHERE kb=? AND doc_id=?", (json.dumps(ids), json.dumps(pending), json.dumps(disabled),
                                                   edit.kb, edit.doc_id))
            if edit.empty or chunk_id is None:
                db.execute("DELETE FROM chunk_edits WHERE kb=? AND doc_id=? AND chunk_key=?",
                           (edit.kb, edit.doc_id, edit.key))
            else:
                db.upsert("chunk_edits", edit.row(), ("kb", "doc_id", "chunk_key"))
            self._bump(db, edit.kb)
            return self._doc(db.one("SELECT * FROM documents WHERE kb=? AND doc_id=?", (edit.kb, edit.doc_id)))
