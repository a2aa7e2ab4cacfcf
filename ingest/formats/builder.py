"""Assembles a `ParsedDocument` block by block: cleans each block's text, joins blocks with
"\\n\\n" (consecutive table rows with "\\n"), records exact offsets, tracks the heading stack."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from rag.types import Block, ParsedDocument, QAPair

_CJK = "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
# control characters except tab and newline, plus invisible format characters
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff\ufffe]")
_SPACES_RE = re.compile(r"[^\S\n]+")  # whitespace runs without newlines (incl. NBSP, ideographic space)
_BLANK_LINES_RE = re.compile(r"\n\s*\n\s*(?:\n\s*)*")
_ANY_WS_RE = re.compile(r"\s+")
_CJK_GAP_RE = re.compile(f"(?<=[{_CJK}]) (?=[{_CJK}])")
# ASCII control characters dropped as _CONTROL_RE drops them; a carriage return separates words
_ASCII_CONTROLS = {c: None for c in [*range(0x09), *range(0x0B, 0x20), 0x7F]} | {0x0D: " "}


def clean_text(text: str, *, keep_lines: bool = False) -> str:
    """Remove control characters and normalise whitespace. Prose collapses to one line;
    `keep_lines` (code, records) keeps line structure but drops blank lines and trailing
    spaces. Spaces between two CJK characters (left by line wrapping) are removed."""
    if not keep_lines and text.isascii():  # fast path (table cells, prose): same result, no regexes
        return " ".join(text.translate(_ASCII_CONTROLS).split())
    text = _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    if keep_lines:
        lines = [line.rstrip() for line in text.split("\n")]
        text = _BLANK_LINES_RE.sub("\n", "\n".join(lines)).strip("\n")
        return text if text.strip() else ""
    text = _ANY_WS_RE.sub(" ", text).strip()
    return _CJK_GAP_RE.sub("", text)


def row_text(header: Sequence[str] | None, cells: Sequence[str]) -> str:
    """One self-describing table row: "col1: val1 | col2: val2" (empty cells skipped)."""
    parts = []
    for i, cell in enumerate(cells):
        value = clean_text(cell)
        if not value:
            continue
        name = clean_text(header[i]) if header is not None and i < len(header) else ""
        parts.append(f"{name}: {value}" if name else value)
    return " | ".join(parts)


class DocBuilder:
    """Accumulates blocks; `build()` returns the document. Offsets are exact:
    `doc.text[b.start:b.end]` is the cleaned text that was added for block `b`."""

    def __init__(self, fmt: str) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._last_kind: str | None = None
        self.blocks: list[Block] = []
        self.qa_pairs: list[QAPair] = []
        self.title: str | None = None
        self.metadata: dict[str, Any] = {"format": fmt}
        self._headings: list[tuple[int, str]] = []  # (depth, title) stack

    @property
    def section_path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._headings)

    def heading(self, text: str, depth: int = 0, page: int | None = None) -> Block | None:
        """A title block. Pops the headings at `depth` or deeper, then pushes this one; the
        block's own section path includes itself."""
        text = clean_text(text)
        if not text:
            return None
        depth = max(0, depth)
        while self._headings and self._headings[-1][0] >= depth:
            self._headings.pop()
        self._headings.append((depth, text))
        if self.title is None:
            self.title = text
        return self.add(text, "title", page=page, clean=False)

    def reset_sections(self, path: Sequence[str] = ()) -> None:
        """Set the section stack explicitly (sheet names, record titles)."""
        self._headings = [(i, name) for i, name in enumerate(path)]

    def add(self, text: str, kind: str = "text", *, page: int | None = None, clean: bool = True,
            keep_lines: bool = False, section_path: tuple[str, ...] | None = None) -> Block | None:
        """Append a block; returns it, or None when its cleaned text is empty. Table rows that
        follow a table row are joined with a single newline, everything else with a blank line."""
        if clean:
            text = clean_text(text, keep_lines=keep_lines)
        if not text:
            return None
        if self._parts:
            sep = "\n" if kind == "table_row" and self._last_kind == "table_row" else "\n\n"
            self._parts.append(sep)
            self._length += len(sep)
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        block = Block(start, self._length, kind, self.section_path if section_path is None else section_path, page)
        self.blocks.append(block)
        self._last_kind = kind
        return block

    def end_table(self) -> None:
        """The next table row starts a new table (separated by a blank line)."""
        self._last_kind = None

    def add_qa(self, question: str, answer: str, block: Block) -> None:
        question, answer = clean_text(question), clean_text(answer)
        if question and answer:
            self.qa_pairs.append(QAPair(question, answer, block.start, block.end, block.page, block.section_path))

    @property
    def is_empty(self) -> bool:
        return not self.blocks

    def build(self, fallback_title: str) -> ParsedDocument:
        return ParsedDocument(text="".join(self._parts), title=self.title or fallback_title, blocks=self.blocks,
                              qa_pairs=self.qa_pairs, metadata=self.metadata)
