"""Deterministic ids: re-ingesting the same content yields the same ids, so nothing duplicates."""

from __future__ import annotations

import hashlib
import uuid


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def doc_id_for(kb: str, source: str) -> str:
    """A document is identified by its knowledge base and its source path."""
    return sha256_hex(f"{kb}\x00{source}")[:24]


def chunk_id_for(kb: str, source: str, start: int, end: int, text: str, variant: str = "") -> str:
    """A chunk is identified by kb, source, its position and its text (and a variant label for
    extra vectors such as generated questions)."""
    return sha256_hex(f"{kb}\x00{source}\x00{start}:{end}\x00{variant}\x00{text}")[:32]


def point_uuid(chunk_id: str) -> str:
    """Qdrant point ids must be UUIDs or integers: a UUID derived from the chunk id."""
    return str(uuid.UUID(hex=sha256_hex(chunk_id)[:32]))


# extra vectors of a chunk (generated questions) have ids `<chunk id>#q<n>`; searches map them back
EXTRA_SEP = "#"


def parent_of(chunk_id: str) -> str:
    """The chunk an id belongs to: itself, or the chunk of an extra vector."""
    return chunk_id.split(EXTRA_SEP, 1)[0]


def edit_key_for(text: str) -> str:
    """What a chunk edit is attached to (rag/chunk_edits.py): the text the chunker gave the chunk, so
    that a re-ingest finds the same chunk again even where the file changed around it."""
    return sha256_hex(f"edit\x00{text}")[:32]
