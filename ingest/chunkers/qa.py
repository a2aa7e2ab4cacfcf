"""Q&A chunking: one chunk per question/answer pair. The reader gets "Q: ...\nA: ..." and the
question alone is embedded and matched; the rest of the document (blocks outside every pair)
and documents without pairs go through the fallback chunker."""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from ingest.chunkers.base import doc_blocks
from ingest.chunkers.recursive import RecursiveChunker
from rag.types import ChunkSpan, ParsedDocument


class QAChunker:
    def __init__(self, fallback: RecursiveChunker) -> None:
        self.fallback = fallback

    @property
    def signature(self) -> str:
        return f"qa:v1:{self.fallback.signature}"

    def split(self, doc: ParsedDocument) -> list[ChunkSpan]:
        if not doc.qa_pairs:
            return self.fallback.split(doc)
        pairs = sorted(doc.qa_pairs, key=lambda p: (p.start, p.end))
        spans = [ChunkSpan(p.start, p.end, f"Q: {p.question}\nA: {p.answer}", p.section_path, p.page, kind="qa",
                           embed_text=p.question) for p in pairs]
        starts = [p.start for p in pairs]
        reach = list(accumulate((p.end for p in pairs), max))  # furthest end among pairs so far

        def covered(start: int, end: int) -> bool:
            i = bisect_right(starts, start) - 1
            return i >= 0 and end <= reach[i]

        rest = [b for b in doc_blocks(doc) if not covered(b.start, b.end)]
        if rest:
            spans.extend(self.fallback.split_blocks(doc, rest))
        return sorted(spans, key=lambda s: (s.start, s.end))
