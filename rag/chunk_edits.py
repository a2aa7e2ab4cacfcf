"""Chunk curation: a chunk's text edited, a chunk disabled, a chunk added by hand, keywords and
questions attached to a chunk. The edits are records in the catalog (`chunk_edits`, one row per
document and key), and the chunks written from them are ordinary chunks in every store.

The key of an edit is the text the chunker gave its chunk (`rag.ids.edit_key_for`), so a re-ingest
finds the chunk again, also where the file changed around it; a chunk added by hand has a key of
its own. A chunk written from an edit has an id of its own, derived from its new content
(`curated`), and carries the key in its payload (`Chunk.edit_key`), so the next edit finds its row.

A re-ingest re-applies the edits to the fresh chunks (`reapply`): always when the file's bytes are
unchanged (a re-chunk after a tag or chunker change), and, when the file changed, as the ingest's
`edits` choice says: `keep` (the default: no work is lost silently) re-applies the edits whose
chunk text is still there and keeps the added chunks; `drop` deletes every edit of the document.
An edit whose chunk text is gone is dropped. The ingest report says how many were kept and dropped.

A chunk added by hand (`NewChunk`, a text or a question and its answer) is part of its document
(offset 0: it is in no file's text), kept by every re-ingest but `edits=drop` of a changed file.

Keywords and questions attached to a chunk (RAGFlow's and FastGPT's) are written before the text
the chunk embeds (`embed_text_of`): its one dense vector holds them and BM25 indexes them with the
chunk's text, the same on every vector store and BM25 backend; the text shown and given to the
model stays the chunk's.

A disabled chunk stays in the stores and in the document's `chunk_ids`; the document's
`disabled_ids` (catalog) take it out of the live set (`Catalog.live_chunk_ids`), so no retriever
returns it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rag.errors import InvalidRequest
from rag.ids import chunk_id_for, edit_key_for, sha256_hex
from rag.types import Chunk

if TYPE_CHECKING:
    from rag.catalog import DocRecord
    from rag.db import Row

KEEP, DROP = "keep", "drop"
EDIT_MODES = (KEEP, DROP)  # what a re-ingest of a changed file does with its document's edits; KEEP first: the default
MAX_TEXT = 20_000
MAX_TERMS, MAX_TERM = 32, 300  # keywords or questions of one chunk, and characters of each

# catalog migration 3: the edits, and the disabled chunk ids of each document
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS chunk_edits (
        kb TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        chunk_key TEXT NOT NULL,
        base_text TEXT NOT NULL DEFAULT '',
        base_embed TEXT,
        text TEXT,
        disabled INTEGER NOT NULL DEFAULT 0,
        keywords TEXT NOT NULL DEFAULT '[]',
        questions TEXT NOT NULL DEFAULT '[]',
        manual INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (kb, doc_id, chunk_key)
    )""",
    "ALTER TABLE documents ADD COLUMN disabled_ids TEXT NOT NULL DEFAULT '[]'",
)
_COLUMNS = ("kb", "doc_id", "chunk_key", "base_text", "base_embed", "text", "disabled", "keywords", "questions",
            "manual", "created_at", "updated_at")


def check_mode(mode: str, field_name: str = "edits") -> str:
    if mode not in EDIT_MODES:
        raise InvalidRequest(f"invalid {field_name} {mode!r}: use {' or '.join(EDIT_MODES)} (what a changed "
                             "file's re-ingest does with its chunk edits)", field=field_name)
    return mode


@dataclass(frozen=True)
class ChunkEdit:
    """One chunk's edit. `base_text` / `base_embed`: the chunk as the chunker gave it (empty for a
    chunk added by hand); `text`: its edited text (None: unchanged; an added chunk's text)."""

    kb: str
    doc_id: str
    key: str
    base_text: str = ""
    base_embed: str | None = None
    text: str | None = None
    disabled: bool = False
    keywords: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()
    manual: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def empty(self) -> bool:
        """Nothing left to apply (the row is deleted)."""
        return self.text is None and not self.disabled and not self.keywords and not self.questions and not self.manual

    def row(self) -> dict[str, Any]:
        return dict(zip(_COLUMNS, (self.kb, self.doc_id, self.key, self.base_text, self.base_embed, self.text,
                                   int(self.disabled), json.dumps(list(self.keywords)),
                                   json.dumps(list(self.questions)), int(self.manual), self.created_at,
                                   self.updated_at)))

    @classmethod
    def from_row(cls, row: Row) -> ChunkEdit:
        return cls(row["kb"], row["doc_id"], row["chunk_key"], row["base_text"], row["base_embed"], row["text"],
                   bool(row["disabled"]), tuple(json.loads(row["keywords"])), tuple(json.loads(row["questions"])),
                   bool(row["manual"]), row["created_at"], row["updated_at"])


def _clean_text(text: str, field_name: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"the {field_name} cannot be empty", field=field_name)
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"the {field_name} has {len(text)} characters; the limit is {MAX_TEXT}", field=field_name)
    return text.strip()


def _clean_terms(terms: Sequence[str], field_name: str) -> tuple[str, ...]:
    if len(terms) > MAX_TERMS:
        raise InvalidRequest(f"{len(terms)} {field_name}; the limit is {MAX_TERMS}", field=field_name)
    out = []
    for term in terms:
        if not isinstance(term, str) or not term.strip():
            raise InvalidRequest(f"an empty entry in {field_name}", field=field_name)
        if len(term.strip()) > MAX_TERM:
            raise InvalidRequest(f"an entry of {field_name} has {len(term.strip())} characters; the limit is "
                                 f"{MAX_TERM}", field=field_name)
        out.append(" ".join(term.split()))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class ChunkPatch:
    """What to change in a chunk: its text, whether it is disabled, its keywords and questions (each
    list replaces the one before; `[]` removes them); at least one."""

    text: str | None = None
    disabled: bool | None = None
    keywords: Sequence[str] | None = None
    questions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.disabled is None and self.keywords is None and self.questions is None:
            raise InvalidRequest("nothing to change: give text, disabled, keywords or questions", field="text")
        if self.text is not None:
            object.__setattr__(self, "text", _clean_text(self.text, "text"))
        for name in ("keywords", "questions"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _clean_terms(getattr(self, name), name))

    def applied_to(self, edit: ChunkEdit) -> ChunkEdit:
        now = time.time()
        changes: dict[str, Any] = {"updated_at": now, "created_at": edit.created_at or now}
        if self.text is not None:
            changes["text"] = None if self.text == edit.base_text and not edit.manual else self.text
        if self.disabled is not None:
            changes["disabled"] = self.disabled
        for name in ("keywords", "questions"):
            if getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        return replace(edit, **changes)


def embed_text_of(text: str, base_embed: str | None, edit: ChunkEdit) -> str | None:
    """What is embedded and matched for a chunk with `edit`'s questions and keywords: they go
    before what the chunk embedded without them (its text, or a Q&A chunk's question), so the one
    dense vector holds them and BM25, which indexes the embedded text with the chunk's text
    (`chunk_tokens`), matches them on every backend."""
    extra = "\n".join([*edit.questions, *([" ".join(edit.keywords)] if edit.keywords else [])])
    if not extra:
        return base_embed
    return f"{extra}\n\n{text}" if base_embed is None else f"{extra}\n{base_embed}"



@dataclass(frozen=True)
class NewChunk:
    """A chunk added by hand to a document: a `text`, or a `question` and its `answer` (a Q&A chunk:
    the question is what is embedded, as for the Q&A rows of a spreadsheet)."""

    text: str | None = None
    question: str | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        if self.text is not None:
            if self.question is not None or self.answer is not None:
                raise InvalidRequest("give text, or question and answer, not both", field="text")
            object.__setattr__(self, "text", _clean_text(self.text, "text"))
        elif self.question is None and self.answer is None:
            raise InvalidRequest("give text, or question and answer", field="text")
        else:
            for name in ("question", "answer"):
                if getattr(self, name) is None:
                    raise InvalidRequest(f"a Q&A chunk needs a {name}", field=name)
                object.__setattr__(self, name, _clean_text(getattr(self, name), name))

    def edit(self, kb: str, doc_id: str) -> ChunkEdit:
        now = time.time()
        text = self.text if self.text is not None else f"Q: {self.question}\nA: {self.answer}"
        return ChunkEdit(kb, doc_id, new_key(doc_id), "", self.question, text, manual=True, created_at=now,
                         updated_at=now)


def manual_chunk(doc: DocRecord, edit: ChunkEdit) -> Chunk:
    """The chunk of an edit that added one by hand to `doc` (at offset 0: it is not in the file's
    text); a Q&A chunk when it has a question (`base_embed`)."""
    text = edit.text or ""
    embed = embed_text_of(text, edit.base_embed, edit)
    content = json.dumps([text, embed], ensure_ascii=False)
    cid = chunk_id_for(doc.kb, doc.source, 0, 0, content, variant=f"manual:{edit.key}")
    return Chunk(id=cid, kb=doc.kb, doc_id=doc.doc_id, source=doc.source, text=text, start=0, end=0,
                 title=doc.title, kind="qa" if edit.base_embed is not None else "text", embed_text=embed,
                 doc_hash=doc.content_hash, mtime=doc.mtime, tags=dict(doc.tags), edit_key=edit.key)


def curated(base: Chunk, edit: ChunkEdit) -> Chunk:
    """The chunk `base` (as the chunker gave it) with `edit` applied; `base` itself when the edit
    changes nothing that is indexed (only disabled). A new content, a new id."""
    text = edit.text if edit.text is not None else base.text
    embed = embed_text_of(text, base.embed_text, edit)
    if text == base.text and embed == base.embed_text:
        return base
    content = json.dumps([text, embed], ensure_ascii=False)
    cid = chunk_id_for(base.kb, base.source, base.start, base.end, content, variant=f"edit:{edit.key}")
    return replace(base, id=cid, text=text, embed_text=embed, edit_key=edit.key,
                   pages=base.pages if text == base.text else base.pages[:1], parent_id=None)


@dataclass
class Reapplied:
    """The chunks of a re-ingested document with its edits applied, and what became of the edits."""

    chunks: list[Chunk]
    disabled_ids: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # keys of the edits deleted at the swap
    kept: int = 0


def reapply(edits: Sequence[ChunkEdit], chunks: Sequence[Chunk], doc: DocRecord, *, changed: bool,
            mode: str) -> Reapplied:
    """Apply the `edits` of `doc` (its new version) to its fresh `chunks` (extra vectors included)
    and add its chunks added by hand: see the module docstring. `changed`: the file's bytes are
    not those the edits were made on."""
    if not edits:
        return Reapplied(list(chunks))
    if changed and mode == DROP:
        return Reapplied(list(chunks), dropped=[e.key for e in edits])
    by_key = {e.key: e for e in edits if not e.manual}
    parents, disabled, used, replaced = [], [], set(), set()
    for chunk in chunks:
        if chunk.parent_id is not None:
            continue
        edit = by_key.get(edit_key_for(chunk.text))
        new = curated(chunk, edit) if edit is not None else chunk
        if edit is not None:
            used.add(edit.key)
            if new.id != chunk.id:
                replaced.add(chunk.id)
            if edit.disabled:
                disabled.append(new.id)
        parents.append(new)
    manual = [(manual_chunk(doc, e), e.disabled) for e in edits if e.manual]
    disabled += [c.id for c, off in manual if off]
    extras = [c for c in chunks if c.parent_id is not None and c.parent_id not in replaced]
    return Reapplied(parents + [c for c, _ in manual] + extras, disabled, [k for k in by_key if k not in used],
                     len(used) + len(manual))


def new_key(doc_id: str) -> str:
    """The key of a chunk added by hand (unique)."""
    return "m" + sha256_hex(f"{doc_id}\x00{time.time_ns()}")[:31]
