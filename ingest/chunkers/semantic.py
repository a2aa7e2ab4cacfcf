"""Semantic chunking (as LangChain's SemanticChunker): embed each sentence with its neighbours,
split where the cosine distance between consecutive sentences exceeds a percentile of the
document's distances. Also splits before `max_size`, merges pieces under `min_size` into a
neighbour, and never crosses a section boundary. Titles stay with the sentence after them;
table rows and code blocks are single units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ingest.chunkers.base import SpanMaker, contiguous_runs, doc_blocks, section_starts
from ingest.chunkers.recursive import RunSplitter
from rag.errors import ConfigError
from rag.protocols import Embedder
from rag.text import split_sentences
from rag.types import Block, ChunkSpan, ParsedDocument

_WHOLE_UNITS = {"title", "table_row", "code"}


class SemanticChunker:
    def __init__(self, embedder: Embedder, percentile: float = 90.0, max_size: int = 1500, min_size: int = 100,
                 buffer: int = 1) -> None:
        if not 0.0 < percentile <= 100.0:
            raise ConfigError(f"semantic percentile must be in (0, 100], got {percentile}", field="semantic_percentile")
        if max_size < 1 or not 0 <= min_size < max_size:
            raise ConfigError(f"need 0 <= min_size < max_size, got min_size={min_size}, max_size={max_size}",
                              field="chunk_size")
        if buffer < 0:
            raise ConfigError(f"buffer must be >= 0, got {buffer}", field="buffer")
        self.embedder = embedder
        self.percentile = percentile
        self.max_size = max_size
        self.min_size = min_size
        self.buffer = buffer

    @property
    def signature(self) -> str:
        return (f"semantic:v1:{self.embedder.name}:p={self.percentile}:max={self.max_size}:min={self.min_size}"
                f":buffer={self.buffer}")

    def split(self, doc: ParsedDocument) -> list[ChunkSpan]:
        return self.split_blocks(doc, doc_blocks(doc))

    def split_blocks(self, doc: ParsedDocument, blocks: Sequence[Block]) -> list[ChunkSpan]:
        text = doc.text
        sections = [_units(text, section) for run in contiguous_runs(text, sorted(blocks, key=lambda b: b.start))
                    for section in _sections(run)]
        distances = self._distances(text, sections)
        every = np.concatenate(distances) if distances else np.zeros(0)
        threshold = float(np.percentile(every, self.percentile)) if every.size else np.inf
        maker = SpanMaker(doc, doc_blocks(doc))
        spans = []
        for units, dist in zip(sections, distances):
            for start, end in self._merge_small(self._groups(text, units, dist, threshold)):
                span = maker.span(start, end)
                if span is not None:
                    spans.append(span)
        return spans

    def _distances(self, text: str, sections: list[list[tuple[int, int]]]) -> list[np.ndarray]:
        """Cosine distance between consecutive units of each section, from one batch call."""
        windows = []
        for units in sections:
            if len(units) < 2:
                continue
            b = self.buffer
            windows.extend(text[units[max(0, i - b)][0] : units[min(len(units) - 1, i + b)][1]]
                           for i in range(len(units)))
        vectors = np.asarray(self.embedder.encode_corpus(windows), dtype=np.float32) if windows else np.zeros((0, 1))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1.0, norms)
        out, offset = [], 0
        for units in sections:
            if len(units) < 2:
                out.append(np.zeros(0))
                continue
            v = vectors[offset : offset + len(units)]
            offset += len(units)
            out.append(1.0 - np.sum(v[:-1] * v[1:], axis=1))
        return out

    def _groups(self, text: str, units: list[tuple[int, int]], dist: np.ndarray,
                threshold: float) -> list[list[int]]:
        groups: list[list[int]] = []
        current: list[int] | None = None
        for i, (start, end) in enumerate(units):
            if end - start > self.max_size:  # one huge sentence or row: cut it on separators
                if current is not None:
                    groups.append(current)
                    current = None
                ranges = RunSplitter(text, [Block(start, end, "text")], self.max_size, 0).ranges()
                groups.extend([a, b] for a, b in ranges)
                continue
            if current is None:
                current = [start, end]
            elif dist[i - 1] > threshold or end - current[0] > self.max_size:
                groups.append(current)
                current = [start, end]
            else:
                current[1] = end
        if current is not None:
            groups.append(current)
        return groups

    def _merge_small(self, groups: list[list[int]]) -> list[list[int]]:
        merged: list[list[int]] = []
        for group in groups:
            small = group[1] - group[0] < self.min_size or (merged and merged[-1][1] - merged[-1][0] < self.min_size)
            if merged and small and group[1] - merged[-1][0] <= self.max_size:
                merged[-1][1] = group[1]
            else:
                merged.append(list(group))
        return merged


def _sections(run: list[Block]) -> list[list[Block]]:
    starts = set(section_starts(run))
    sections: list[list[Block]] = []
    for block in run:
        if not sections or block.start in starts:
            sections.append([])
        sections[-1].append(block)
    return sections


def _units(text: str, blocks: list[Block]) -> list[tuple[int, int]]:
    """Sentences of the section's blocks; titles, rows and code blocks whole; a title is
    joined to the unit after it."""
    units: list[tuple[int, int]] = []
    pending_title: int | None = None
    for block in blocks:
        pieces = [(block.start, block.end)] if block.kind in _WHOLE_UNITS else split_sentences(text, block.start, block.end)
        for start, end in pieces:
            if pending_title is not None:
                start, pending_title = pending_title, None
            if block.kind == "title":
                pending_title = start
                continue
            units.append((start, end))
    if pending_title is not None:
        units.append((pending_title, blocks[-1].end))
    return units
