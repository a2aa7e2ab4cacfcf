"""A linear parser for large plain-text and Markdown files. unstructured's partitioners run spaCy
on every paragraph (~13 s per MB of prose); above `ParseLimits.large_text_mb` the text is instead
normalised once (newlines, control characters, NFC) and becomes the document text itself, and
every paragraph (lines up to a blank line) becomes a block pointing into it: no copy of the text
is made, so offsets are exact by construction and memory stays near the size of the text.
Markdown headings (`#`), fenced code and list items are recognised; in plain text a short line
that does not end like a sentence is a heading."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from ingest.formats.builder import _CONTROL_RE
from ingest.limits import ParseBudget
from rag.types import Block, ParsedDocument

_BLANK_RE = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)*")  # ends at the start of a line
_MD_HEADING_RE = re.compile(r"(#{1,6})[ \t]+(\S[^\n]*?)[ \t#]*$")
_FENCE_RE = re.compile(r"^[ \t]{0,3}(```|~~~)", re.MULTILINE)
_LIST_RE = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+\S")
_TERMINAL = tuple(".!?;:,。！？；：，、")
_HAS_LETTER_RE = re.compile(r"[^\W\d_]")


def normalize(text: str) -> str:
    """Newlines to \\n, control and invisible format characters removed, NFC; each step copies
    the text only when it changes something."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub("", text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def parse_large_text(text: str, fmt: str, encoding: str, stem: str,
                     budget: ParseBudget) -> ParsedDocument:
    text = normalize(text)
    markdown = fmt == "md"
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    path: tuple[str, ...] = ()
    title = None
    for start, end, kind in _paragraphs(text, markdown):
        if len(blocks) % 1024 == 0:
            budget.tick()
        if kind == "text":
            line_end = text.find("\n", start, end)
            first = text[start : end if line_end < 0 else line_end]
            heading = _heading(first, markdown, single_line=line_end < 0)
            if heading is not None:
                depth, offset, length = heading
                name = first[offset : offset + length]
                while headings and headings[-1][0] >= depth:
                    headings.pop()
                headings.append((depth, name))
                path = tuple(h for _, h in headings)
                title = title or name
                blocks.append(Block(start + offset, start + offset + length, "title", path))
                if line_end < 0:
                    continue
                start = _skip_space(text, line_end, end)
            elif markdown and _LIST_RE.match(first):
                kind = "list"
        blocks.append(Block(start, end, kind, path))
    return ParsedDocument(text=text, title=title or stem, blocks=blocks, qa_pairs=[],
                          metadata={"format": fmt, "encoding": encoding, "parser": "linear"})


def _paragraphs(text: str, markdown: bool) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of each paragraph, whitespace trimmed; in Markdown a fenced code block
    (blank lines included) is one "code" paragraph."""
    pos, n = 0, len(text)
    while pos < n:  # pos is always at the start of a line
        gap = _BLANK_RE.search(text, pos)
        para_end, next_pos = (gap.start(), gap.end()) if gap else (n, n)
        fence = _FENCE_RE.search(text, pos, para_end) if markdown else None
        if fence is not None:
            yield from _span(text, pos, fence.start(), "text")
            line_end = text.find("\n", fence.end())
            close = _FENCE_RE.search(text, line_end + 1) if line_end >= 0 else None
            end = n if close is None else (text.find("\n", close.end()) + 1 or n)
            yield from _span(text, fence.start(), end, "code")
            pos = end
            continue
        yield from _span(text, pos, para_end, "text")
        pos = next_pos


def _span(text: str, start: int, end: int, kind: str) -> Iterator[tuple[int, int, str]]:
    start, end = _skip_space(text, start, end), _trim_end(text, start, end)
    if start < end:
        yield start, end, kind


def _heading(line: str, markdown: bool, single_line: bool) -> tuple[int, int, int] | None:
    """(depth, offset, length) of the heading text in `line`, or None."""
    if markdown:
        match = _MD_HEADING_RE.match(line)
        if match is None:
            return None
        return len(match.group(1)) - 1, match.start(2), len(match.group(2))
    stripped = line.rstrip()
    if (single_line and len(stripped) <= 100 and not stripped.endswith(_TERMINAL)
            and _HAS_LETTER_RE.search(stripped) and not _LIST_RE.match(stripped)):
        return 0, 0, len(stripped)
    return None


def _skip_space(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end
