"""Plain data types shared by every stage: documents, chunks, hits, answers.

Offsets (`start`, `end`) are character offsets into the *parsed* text of a document
(`ParsedDocument.text`), so a citation can always be shown as the exact span it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rag.errors import InvalidRequest


@dataclass(frozen=True, slots=True)  # slots: a large file has hundreds of thousands of blocks
class Block:
    """One element of a parsed document (title, paragraph, table row, list item...)."""

    start: int
    end: int
    kind: str  # "title" | "text" | "table" | "table_row" | "list" | "code"
    section_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True)
class QAPair:
    """A question/answer row imported from a spreadsheet, CSV or JSON file.

    `start`/`end` locate the answer (or the whole row) in the parsed text.
    """

    question: str
    answer: str
    start: int
    end: int
    page: int | None = None
    section_path: tuple[str, ...] = ()


@dataclass
class ParsedDocument:
    """What a parser returns: the full text and its structure."""

    text: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    qa_pairs: list[QAPair] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkSpan:
    """What a chunker returns: a span of the parsed text plus its structural context.

    `embed_text` is what gets embedded and matched when it differs from the span text
    (the question of a Q&A chunk); `None` means the span text itself.
    """

    start: int
    end: int
    text: str
    section_path: tuple[str, ...] = ()
    page: int | None = None
    kind: str = "text"  # "text" | "qa"
    embed_text: str | None = None
    pages: tuple[tuple[int, int], ...] = ()  # (page, offset in text) where each page begins (rag/pages.py)


@dataclass
class Chunk:
    """A stored chunk: the unit that is embedded, indexed in BM25, retrieved and cited."""

    id: str
    kb: str
    doc_id: str
    source: str  # path relative to the ingested root (or the upload name)
    text: str  # the text returned to the reader and given to the LLM
    start: int
    end: int
    title: str = ""
    section_path: tuple[str, ...] = ()
    page: int | None = None
    kind: str = "text"
    embed_text: str | None = None  # what was embedded when it differs from `text`
    doc_hash: str = ""
    mtime: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    parent_id: str | None = None  # generated-question vectors point back to their chunk
    ocr: bool = False  # the text was recognised from a page image
    ocr_confidence: float | None = None  # mean OCR recognition confidence (0..1) of that text
    pages: tuple[tuple[int, int], ...] = ()  # (page, offset in text) where each page begins (rag/pages.py)
    edit_key: str | None = None  # a chunk written from an edit (rag/chunk_edits.py): the edit's key

    @property
    def match_text(self) -> str:
        return self.embed_text if self.embed_text is not None else self.text

    def payload(self) -> dict[str, Any]:
        out = {
            "chunk_id": self.id,
            "kb": self.kb,
            "doc_id": self.doc_id,
            "source": self.source,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "title": self.title,
            "section_path": list(self.section_path),
            "page": self.page,
            "kind": self.kind,
            "embed_text": self.embed_text,
            "doc_hash": self.doc_hash,
            "mtime": self.mtime,
            "tags": [f"{k}={v}" for k, v in sorted(self.tags.items())],
            "parent_id": self.parent_id,
            "ocr": self.ocr,
            "ocr_confidence": self.ocr_confidence,
            "pages": [list(p) for p in self.pages],
        }
        if self.edit_key is not None:  # only on edited and added chunks: the others' payloads stay as they were
            out["edit_key"] = self.edit_key
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Chunk:
        tags = dict(t.split("=", 1) for t in payload.get("tags") or [] if "=" in t)
        return cls(
            id=payload["chunk_id"],
            kb=payload["kb"],
            doc_id=payload["doc_id"],
            source=payload["source"],
            text=payload["text"],
            start=int(payload["start"]),
            end=int(payload["end"]),
            title=payload.get("title") or "",
            section_path=tuple(payload.get("section_path") or ()),
            page=payload.get("page"),
            kind=payload.get("kind") or "text",
            embed_text=payload.get("embed_text"),
            doc_hash=payload.get("doc_hash") or "",
            mtime=float(payload.get("mtime") or 0.0),
            tags=tags,
            parent_id=payload.get("parent_id"),
            ocr=bool(payload.get("ocr")),
            ocr_confidence=payload.get("ocr_confidence"),
            pages=tuple((int(p), int(o)) for p, o in payload["pages"]) if "pages" in payload
            # stored before chunks recorded their page boundaries: the one page they knew
            else (((int(payload["page"]), 0),) if payload.get("page") is not None else ()),
            edit_key=payload.get("edit_key"),
        )


@dataclass(frozen=True)
class Filter:
    """Metadata filter applied identically by every retriever.

    Every given field must match: `sources` / `doc_ids` are any-of lists, `tags` are
    `key=value` pairs that must all be present, `mtime_from`/`mtime_to` bound the modified
    time (unix seconds, inclusive).
    """

    sources: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    mtime_from: float | None = None
    mtime_to: float | None = None

    def is_empty(self) -> bool:
        return not (self.sources or self.doc_ids or self.tags) and self.mtime_from is None and self.mtime_to is None

    def matches(self, payload: dict[str, Any]) -> bool:
        if self.sources and payload.get("source") not in self.sources:
            return False
        if self.doc_ids and payload.get("doc_id") not in self.doc_ids:
            return False
        if self.tags and not set(self.tags) <= set(payload.get("tags") or ()):
            return False
        mtime = float(payload.get("mtime") or 0.0)
        if self.mtime_from is not None and mtime < self.mtime_from:
            return False
        if self.mtime_to is not None and mtime > self.mtime_to:
            return False
        return True


@dataclass(frozen=True)
class ScoredId:
    """One entry of a single ranked list (dense or BM25) before fusion."""

    chunk_id: str
    score: float


@dataclass(frozen=True)
class ListHit:
    """Where a fused hit appeared: which list, for which query variant, at what rank (from 1)."""

    list_name: str  # a retrieval list name (rag/names.py LISTS)
    variant: str  # the query variant label ("original", "multi_query:1", "hyde", ...)
    rank: int
    score: float


@dataclass
class Hit:
    """A retrieved chunk with its fused score, provenance and (optionally) rerank score."""

    chunk: Chunk
    score: float  # fused score (convex or RRF, rag/fusion.py)
    provenance: list[ListHit] = field(default_factory=list)
    rerank_score: float | None = None

    @property
    def final_score(self) -> float:
        return self.rerank_score if self.rerank_score is not None else self.score


@dataclass
class Source:
    """A numbered source as shown to the model and returned to the reader."""

    number: int
    chunk_id: str
    doc_id: str
    source: str
    title: str
    section_path: tuple[str, ...]
    page: int | None
    start: int
    end: int
    text: str
    score: float
    rerank_score: float | None = None
    ocr: bool = False
    ocr_confidence: float | None = None
    pages: tuple[tuple[int, int], ...] = ()  # the chunk's page boundaries (rag/pages.py)


@dataclass
class Citation:
    """A `[n]` marker in the answer mapped to its source, with the verification result."""

    number: int
    sentence: str
    sentence_start: int
    sentence_end: int
    source_number: int
    chunk_id: str
    support: float | None = None  # 0..1 similarity of the sentence to the cited chunk
    supported: bool | None = None
    # "model": the model wrote the marker; "attributed": the model cited nothing that supports
    # the sentence and the verifier found this source supporting it
    origin: str = "model"
    page: int | None = None  # the page the supporting sentence of the source is on (rag/pages.py)


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[Source] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    refused: bool = False
    standalone_question: str | None = None
    query_variants: list[dict[str, str]] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    rerank_enabled: bool = False
    model: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def parse_tags(values: Iterable[str], field: str = "tags") -> dict[str, str]:
    """Document tags from `key=value` strings, each possibly a comma list (the CLI's repeated
    `--tag` and the API's `tags` form field alike): `["team=hr", "lang=en, year=2024"]` ->
    {"team": "hr", "lang": "en", "year": "2024"}. Raises InvalidRequest naming `field`."""
    tags: dict[str, str] = {}
    for value in values:
        for item in str(value).split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip() or not val.strip():
                raise InvalidRequest(f"invalid tag {item.strip()!r} in {field}: use key=value", field=field)
            tags[key.strip()] = val.strip()
    return tags


MAX_TAG_LEN = 200


def check_tags(tags: Mapping[str, str], field: str = "tags") -> dict[str, str]:
    """Tags given as a mapping (an edit through the API): every key and value non-empty, at most
    MAX_TAG_LEN characters, without the `,` that separates tags in `parse_tags` (nor `=` in a key),
    so that every tag reads back as the same `key=value`. Raises InvalidRequest naming `field`."""
    for key, value in tags.items():
        k, v = str(key).strip(), str(value).strip()
        if not k or not v or "=" in k or "," in k or "," in v or len(k) > MAX_TAG_LEN or len(v) > MAX_TAG_LEN:
            shown = ": ".join(repr(x if len(x) <= 40 else x[:40] + "…") for x in (str(key), str(value)))
            raise InvalidRequest(f"invalid tag {shown} in {field}: a key and a value of 1-{MAX_TAG_LEN} "
                                 "characters, no ',' (nor '=' in the key)", field=field)
    return {str(k).strip(): str(v).strip() for k, v in tags.items()}
