"""Recursive character chunking on exact offsets.

A chunk ends at the coarsest separator that keeps it within `size` and at least half full
(blank line, line break, sentence end, comma, space, then a hard cut), so it stays on paragraph
and sentence boundaries. It never runs past a section start once it holds size/4 characters,
never ends right after a title, and never cuts a table row that fits in a chunk. The next chunk
starts at a separator about `overlap` characters before the previous end."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from ingest.chunkers.base import SpanMaker, contiguous_runs, doc_blocks, section_starts
from rag.errors import ConfigError
from rag.types import Block, ChunkSpan, ParsedDocument

# tiers of (separator, where the chunk ends relative to the separator); the next chunk may
# start right after the separator
TIERS: tuple[tuple[tuple[str, int], ...], ...] = (
    (("\n\n", 0),),
    (("\n", 0),),
    (("。", 1), ("！", 1), ("？", 1), ("；", 1), (". ", 1), ("! ", 1), ("? ", 1), ("; ", 1)),
    (("，", 1), (", ", 1)),
    ((" ", 0),),
)


class RecursiveChunker:
    def __init__(self, size: int = 800, overlap: int = 120) -> None:
        if size < 1:
            raise ConfigError(f"chunk size must be positive, got {size}", field="chunk_size")
        if overlap < 0 or overlap >= size:
            raise ConfigError(f"chunk overlap must be in [0, size), got {overlap} for size {size}", field="chunk_overlap")
        self.size = size
        self.overlap = overlap

    @property
    def signature(self) -> str:
        return f"recursive:v1:size={self.size}:overlap={self.overlap}"

    def split(self, doc: ParsedDocument) -> list[ChunkSpan]:
        return self.split_blocks(doc, doc_blocks(doc))

    def split_blocks(self, doc: ParsedDocument, blocks: Sequence[Block]) -> list[ChunkSpan]:
        """Chunk only `blocks` (a subset of the document's); text between non-adjacent blocks
        is never part of a chunk."""
        maker = SpanMaker(doc, doc_blocks(doc))
        spans = []
        for run in contiguous_runs(doc.text, sorted(blocks, key=lambda b: b.start)):
            for start, end in RunSplitter(doc.text, run, self.size, self.overlap).ranges():
                span = maker.span(start, end)
                if span is not None:
                    spans.append(span)
        return spans


class RunSplitter:
    """Splits one contiguous run of blocks into `(start, end)` offset ranges."""

    def __init__(self, text: str, run: Sequence[Block], size: int, overlap: int) -> None:
        self.text = text
        self.size = size
        self.overlap = overlap
        self.start, self.end = run[0].start, run[-1].end
        self.sections = section_starts(run)
        # cuts strictly inside these intervals are refused: rows that fit in a chunk (always),
        # a title and the block it introduces (unless nothing else fits)
        self.atomic = sorted((b.start, b.end) for b in run if b.kind == "table_row" and b.end - b.start <= size)
        self.attached = [(b.start, nxt.start) for b, nxt in zip(run, run[1:]) if b.kind == "title"]

    def ranges(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        pos, prev_end = self.start, self.start
        while True:
            pos = self._skip_space(pos)
            if pos >= self.end:
                return out
            stop = self._stop(pos)
            if stop - pos <= self.size:
                out.append((pos, stop))
                pos = prev_end = stop
                continue
            cut = self._cut(pos, prev_end)
            out.append((pos, cut))
            pos = self._overlap_start(pos, cut) if self.overlap else cut
            prev_end = cut

    def _skip_space(self, pos: int) -> int:
        while pos < self.end and self.text[pos].isspace():
            pos += 1
        return pos

    def _stop(self, pos: int) -> int:
        """The first section start the chunk may not cross: one it reaches holding size/4."""
        i = bisect_left(self.sections, pos + self.size / 4)  # boundaries closer than size/4 are crossed
        return self.sections[i] if i < len(self.sections) else self.end

    def _cut(self, pos: int, prev_end: int) -> int:
        limit = pos + self.size
        floor = max(pos + 1, prev_end + 1)
        half = max(floor, pos + self.size // 2)
        for soft in (True, False):
            for low in (half, floor):
                for tier in TIERS:
                    cut = self._last_cut(tier, low, limit, soft)
                    if cut is not None:
                        return cut
        return limit  # no separator at all: hard cut

    def _last_cut(self, tier: tuple[tuple[str, int], ...], low: int, high: int, soft: bool) -> int | None:
        best = None
        for sep, offset in tier:
            i = self.text.rfind(sep, low - offset, high - offset + len(sep))
            while i >= 0 and i + offset >= low:
                if self._allowed(i + offset, soft):
                    best = i + offset if best is None else max(best, i + offset)
                    break
                i = self.text.rfind(sep, low - offset, i + len(sep) - 1)
        return best

    def _allowed(self, cut: int, soft: bool) -> bool:
        if _inside(self.atomic, cut):
            return False
        return not (soft and _inside(self.attached, cut))

    def _overlap_start(self, pos: int, cut: int) -> int:
        """A start after a separator near `cut - overlap`, coarsest separator first; never
        before a section start inside the previous chunk, never inside an atomic row."""
        target = cut - self.overlap
        low = max(pos + 1, target - self.overlap // 2)
        i = bisect_right(self.sections, cut) - 1
        if i >= 0 and self.sections[i] > pos:
            low = max(low, self.sections[i])
        high = min(cut - 1, target + self.overlap // 2)
        if low > high:
            return cut
        for tier in TIERS:
            best = None
            for sep, _ in tier:
                i = self.text.find(sep, max(0, low - len(sep)), high)
                while i >= 0 and i + len(sep) <= high:
                    start = i + len(sep)
                    if start >= low and not _inside(self.atomic, start):
                        if best is None or abs(start - target) < abs(best - target):
                            best = start
                    i = self.text.find(sep, i + 1, high)
            if best is not None:
                return best
        if low <= target <= high and not _inside(self.atomic, target) and not _mid_word(self.text, target):
            return target  # unspaced text (CJK without punctuation)
        return cut


def _inside(intervals: list[tuple[int, int]], pos: int) -> bool:
    i = bisect_left(intervals, (pos, pos)) - 1
    return i >= 0 and intervals[i][0] < pos < intervals[i][1]


def _mid_word(text: str, pos: int) -> bool:
    before, after = text[pos - 1], text[pos]
    return before.isascii() and before.isalnum() and after.isascii() and after.isalnum()
