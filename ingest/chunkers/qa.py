"""Q&A pairs first, whatever the chunker: one chunk per question/answer pair (a table row with
question/answer columns, a JSON record with question/answer keys). The reader gets
"Q: ...\nA: ..." and the question alone is embedded and matched; the rest of the document
(blocks outside every pair) and documents without pairs go through the wrapped chunker.
`make_chunker` wraps every chunker in it, so a Q&A sheet is never merged into blob chunks."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Protocol

from ingest.chunkers.base import doc_blocks
from rag.types import Block, ChunkSpan, ParsedDocument


class BlockChunker(Protocol):
    """A chunker that can also chunk a subset of a document's blocks."""

    @property
    def signature(self) -> str: ...

    def split(self, doc: ParsedDocument) -> list[ChunkSpan]: ...

    def split_blocks(self, doc: ParsedDocument, blocks: Sequence[Block]) -> list[ChunkSpan]: ...


class QAChunker:
    def __init__(self, fallback: BlockChunker) -> None:
        self.fallback = fallback

    @property
    def signature(self) -> str:
        return f"qa:v2:{self.fallback.signature}"

    def split(self, doc: ParsedDocument) -> list[ChunkSpan]:
        if not doc.qa_pairs:
            return self.fallback.split(doc)
        pairs = sorted(doc.qa_pairs, key=lambda p: (p.start, p.end))
        spans = [ChunkSpan(p.start, p.end, f"Q: {p.question}\nA: {p.answer}", p.section_path, p.page, kind="qa",
                           embed_text=p.question, pages=((p.page, 0),) if p.page is not None else ())
                 for p in pairs]
        starts = [p.start for p in pairs]
        reach = list(accumulate((p.end for p in pairs), max))  # furthest end among pairs so far

        def covered(start: int, end: int) -> bool:
            i = bisect_right(starts, start) - 1
            return i >= 0 and end <= reach[i]

        rest = [b for b in doc_blocks(doc) if not covered(b.start, b.end)]
        if rest:
            spans.extend(self.fallback.split_blocks(doc, rest))
        return sorted(spans, key=lambda s: (s.start, s.end))
