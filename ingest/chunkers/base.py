"""Helpers shared by the chunkers: contiguous runs of blocks, section starts, and turning an
offset range into a trimmed `ChunkSpan` carrying the section path and page of its first block and
where each page it covers begins (a chunk over a page break cites the right page)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rag.pages import page_starts
from rag.types import Block, ChunkSpan, ParsedDocument


@runtime_checkable
class Chunker(Protocol):
    """Splits a parsed document into spans; `signature` names the settings (it changes when
    re-chunking would give different spans, so unchanged documents can be skipped)."""

    @property
    def signature(self) -> str: ...

    def split(self, doc: ParsedDocument) -> list[ChunkSpan]: ...


def doc_blocks(doc: ParsedDocument) -> list[Block]:
    """The document's blocks, or one text block over the whole text when it has none."""
    if doc.blocks:
        return sorted(doc.blocks, key=lambda b: b.start)
    start, end = trim(doc.text, 0, len(doc.text))
    return [Block(start, end, "text")] if end > start else []


def contiguous_runs(text: str, blocks: Sequence[Block]) -> list[list[Block]]:
    """Group sorted blocks into runs with only whitespace between neighbours: a chunk never
    spans text that is not part of the given blocks."""
    runs: list[list[Block]] = []
    for block in blocks:
        if runs and not text[runs[-1][-1].end : block.start].strip():
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def section_starts(blocks: Sequence[Block]) -> list[int]:
    """Offsets where a new section begins inside a run (not counting the run's start): at each
    title, and where the section path changes without a title (sheets, records)."""
    starts = []
    for prev, block in zip(blocks, blocks[1:]):
        if block.kind == "title" or (prev.kind != "title" and block.section_path != prev.section_path):
            starts.append(block.start)
    return starts


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class SpanMaker:
    """Builds spans for one document, locating the block where each span starts."""

    def __init__(self, doc: ParsedDocument, blocks: Sequence[Block]) -> None:
        self._text = doc.text
        self._blocks = list(blocks)
        self._starts = [b.start for b in self._blocks]

    def block_at(self, offset: int) -> Block | None:
        i = bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self._blocks[i].end:
            return self._blocks[i]
        return self._blocks[i + 1] if i + 1 < len(self._blocks) else (self._blocks[i] if i >= 0 else None)

    def span(self, start: int, end: int) -> ChunkSpan | None:
        start, end = trim(self._text, start, end)
        if end <= start:
            return None
        block = self.block_at(start)
        first = max(0, bisect_right(self._starts, start) - 1)
        pages = page_starts(((b.start, b.end, b.page) for b in self._blocks[first:]), start, end)
        return ChunkSpan(start, end, self._text[start:end], block.section_path if block else (),
                         block.page if block else None, pages=pages)
