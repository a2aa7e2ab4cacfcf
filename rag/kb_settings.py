"""Per-knowledge-base ingest settings: the chunker, chunk size and overlap, OCR on or off, and tags
given to the files ingested into it. They live in the knowledge base's catalog meta
(`meta["settings"]`, `Catalog.update_kb_meta`); a field a knowledge base does not set is the
server's (RAG_CHUNKER, RAG_CHUNK_SIZE, RAG_CHUNK_OVERLAP, RAG_OCR).

Precedence, lowest first: the server's settings, the knowledge base's settings, then the overrides
of one ingest (`rag ingest --chunker/--chunk-size/--chunk-overlap/--ocr`, a re-parse's `settings`).
Tags: the knowledge base's, then the upload's or `--tag`'s (same key: the upload's wins).

A change of the chunker, size, overlap or OCR applies to what is ingested later: documents already
indexed keep their chunks until they are re-parsed (re-read from their stored file, re-chunked and
their chunks embedded again with the knowledge base's own model). No re-embedding of the knowledge
base with another model is involved: the model is not a setting here (that is `rag reindex`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rag.errors import ConfigError
from rag.names import CHUNK_OVERLAP_RANGE, CHUNK_SIZE_RANGE, CHUNKERS
from rag.types import check_tags

SETTINGS_KEY = "settings"  # in a knowledge base's meta
CHUNKING_FIELDS = ("chunker", "chunk_size", "chunk_overlap", "ocr")
CHANGED_AT = "chunking_changed_at"  # when a chunking field last changed: documents ingested before are stale


@dataclass(frozen=True)
class Chunking:
    """The resolved chunking of one ingest."""

    chunker: str
    chunk_size: int
    chunk_overlap: int
    ocr: bool


@dataclass(frozen=True)
class KbSettings:
    """What a knowledge base sets; None: the server's setting."""

    chunker: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    ocr: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)
    chunking_changed_at: float | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> KbSettings:
        stored = (meta or {}).get(SETTINGS_KEY) or {}
        known = {k: stored[k] for k in (*CHUNKING_FIELDS, "tags", CHANGED_AT) if stored.get(k) is not None}
        return cls(**known)

    def to_meta(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    def updated(self, changes: Mapping[str, Any], now: float | None = None) -> KbSettings:
        """These settings with `changes` applied (a None value: back to the server's setting);
        `chunking_changed_at` moves when a chunking field's value changes."""
        unknown = set(changes) - {*CHUNKING_FIELDS, "tags"}
        if unknown:
            raise ConfigError(f"unknown knowledge-base setting {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
        values = dict(changes)
        if "tags" in values:
            values["tags"] = check_tags(values["tags"] or {}, "tags")
        new = replace(self, **values)
        if any(getattr(new, f) != getattr(self, f) for f in CHUNKING_FIELDS):
            new = replace(new, chunking_changed_at=time.time() if now is None else now)
        return new

    def overrides(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in CHUNKING_FIELDS if getattr(self, f) is not None}


def resolve(server: Chunking, *layers: Mapping[str, Any] | None, prefix: str = "") -> Chunking:
    """`server` with each layer's non-None chunking fields applied in order (later wins), checked.
    `prefix` goes before the field a ConfigError names (`settings.` for a re-parse's overrides)."""
    values = asdict(server)
    for layer in layers:
        values.update({k: v for k, v in (layer or {}).items() if k in CHUNKING_FIELDS and v is not None})
    return check(Chunking(**values), prefix)


def check(chunking: Chunking, prefix: str = "") -> Chunking:
    """The chunking if its values are usable, else a ConfigError naming the field."""
    if chunking.chunker not in CHUNKERS:
        raise ConfigError(f"unknown chunker {chunking.chunker!r} (choose one of: {', '.join(CHUNKERS)})",
                          field=prefix + "chunker")
    for name, (low, high) in (("chunk_size", CHUNK_SIZE_RANGE), ("chunk_overlap", CHUNK_OVERLAP_RANGE)):
        value = getattr(chunking, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}",
                              field=prefix + name)
    if chunking.chunk_overlap >= chunking.chunk_size:
        raise ConfigError(f"chunk_overlap ({chunking.chunk_overlap}) must be smaller than chunk_size "
                          f"({chunking.chunk_size})", field=prefix + "chunk_overlap")
    return chunking
