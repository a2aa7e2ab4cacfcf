"""Chunkers: `split(doc) -> list[ChunkSpan]` with exact offsets into `doc.text`.

- `RecursiveChunker(size, overlap)`: separators from blank lines down to a hard cut.
- `SemanticChunker(embedder, percentile, max_size, min_size)`: splits where meaning shifts.
- `QAChunker(fallback)`: one chunk per Q&A pair, the rest through the fallback.

`make_chunker` wraps the named chunker in `QAChunker`: Q&A pairs become one chunk each with any
chunker ("qa" is kept as a name for the recursive chunker, which it now equals).
"""

from __future__ import annotations

from ingest.chunkers.base import Chunker
from ingest.chunkers.qa import QAChunker
from ingest.chunkers.recursive import RecursiveChunker
from ingest.chunkers.semantic import SemanticChunker
from rag.errors import ConfigError
from rag.names import CHUNKERS
from rag.protocols import Embedder

CHUNKER_NAMES = CHUNKERS

__all__ = ["CHUNKER_NAMES", "Chunker", "QAChunker", "RecursiveChunker", "SemanticChunker", "make_chunker"]


def make_chunker(name: str, *, size: int = 800, overlap: int = 120, embedder: Embedder | None = None,
                 percentile: float = 90.0) -> Chunker:
    """The chunker named in the settings, Q&A pairs first. The semantic chunker uses `size` as
    its maximum chunk size and size/8 (at most 100) as its minimum."""
    key = name.strip().lower()
    if key in ("recursive", "qa"):
        return QAChunker(RecursiveChunker(size, overlap))
    if key == "semantic":
        if embedder is None:
            raise ConfigError("the semantic chunker needs an embedder", field="chunker")
        return QAChunker(SemanticChunker(embedder, percentile, max_size=size, min_size=min(100, size // 8)))
    raise ConfigError(f"unknown chunker {name!r} (choose one of: {', '.join(CHUNKER_NAMES)})", field="chunker")
