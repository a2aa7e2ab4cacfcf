"""Reading order for OCR text boxes: rows joined left to right, top to bottom, paragraphs at
vertical gaps, and on a two-column page the left column before the right one (a full-width line,
such as a title over both columns, stays in place between the column bands)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class OcrLine:
    """One recognised text box: its text, recognition confidence (0..1) and bounding box."""

    text: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def layout_text(boxes: Sequence[OcrLine], page_width: float) -> str:
    """The boxes as text in reading order: rows joined left to right, lines with "\\n", a blank
    line at a paragraph gap and between columns. Full-width lines (a title over two columns)
    stay where they are; the columns between them are read left column first."""
    if not boxes:
        return ""
    split = column_split(boxes, page_width)
    if split is None:
        return _paragraphs(_rows(boxes))
    parts: list[str] = []
    band: list[OcrLine] = []

    def flush() -> None:
        left = [b for b in band if b.x1 <= split]
        right = [b for b in band if b.x1 > split]
        parts.extend(p for p in (_paragraphs(_rows(left)), _paragraphs(_rows(right))) if p)
        band.clear()

    for box in sorted(boxes, key=lambda b: (b.y0, b.x0)):
        if box.x0 < split < box.x1:  # crosses the gutter: a full-width line
            flush()
            parts.append(box.text)
        else:
            band.append(box)
    flush()
    return "\n\n".join(parts)


def column_split(boxes: Sequence[OcrLine], page_width: float) -> float | None:
    """The x of the gutter of a two-column page, or None. A gutter is the widest vertical strip
    in the middle half of the text area that no box crosses (boxes wider than 60 % of the text
    are titles and ignored), with at least three rows of text on each side."""
    left_edge = min(b.x0 for b in boxes)
    right_edge = max(b.x1 for b in boxes)
    width = right_edge - left_edge
    if width <= 0:
        return None
    narrow = [b for b in boxes if b.x1 - b.x0 < 0.6 * width]
    if len(narrow) < 6:
        return None
    low, high = left_edge + 0.25 * width, left_edge + 0.75 * width
    intervals = sorted((max(b.x0, low), min(b.x1, high)) for b in narrow if b.x1 > low and b.x0 < high)
    best_gap, best_x, cursor = 0.0, None, low
    for start, end in intervals:
        if start - cursor > best_gap:
            best_gap, best_x = start - cursor, (start + cursor) / 2
        cursor = max(cursor, end)
    if high - cursor > best_gap:
        best_gap, best_x = high - cursor, (high + cursor) / 2
    if best_x is None or best_gap < 0.015 * max(page_width, width):
        return None
    left_rows = len(_rows([b for b in narrow if b.x1 <= best_x]))
    right_rows = len(_rows([b for b in narrow if b.x0 >= best_x]))
    return best_x if left_rows >= 3 and right_rows >= 3 else None


def _rows(boxes: Sequence[OcrLine]) -> list[list[OcrLine]]:
    """Boxes grouped into rows (vertical overlap of more than half the smaller height), each
    sorted left to right; rows sorted top to bottom."""
    rows: list[list[OcrLine]] = []
    for box in sorted(boxes, key=lambda b: ((b.y0 + b.y1) / 2, b.x0)):
        if rows:
            last = rows[-1]
            top, bottom = min(b.y0 for b in last), max(b.y1 for b in last)
            overlap = min(bottom, box.y1) - max(top, box.y0)
            if overlap > 0.5 * min(bottom - top, box.height):
                last.append(box)
                continue
        rows.append([box])
    return [sorted(row, key=lambda b: b.x0) for row in rows]


def _paragraphs(rows: list[list[OcrLine]]) -> str:
    """Rows as lines; a vertical gap larger than 0.8 x the median row height starts a paragraph."""
    if not rows:
        return ""
    heights = [max(b.y1 for b in row) - min(b.y0 for b in row) for row in rows]
    median = statistics.median(heights) or 1.0
    out: list[str] = []
    previous_bottom: float | None = None
    for row in rows:
        top, bottom = min(b.y0 for b in row), max(b.y1 for b in row)
        if previous_bottom is not None and top - previous_bottom > 0.8 * median:
            out.append("")
        out.append(" ".join(b.text for b in row))
        previous_bottom = bottom
    return "\n".join(out)
