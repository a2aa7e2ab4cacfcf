"""PDF text through pypdf, page by page (unstructured's partition_pdf needs
unstructured-inference). Each page's lines are regrouped into paragraphs, headings and list
items with conservative layout heuristics; page numbers are 1-based. Pages without a text layer
are OCR'd (ingest/formats/pdf_ocr.py) unless OCR is off. The file's `ParseBudget` is checked before
every page; the time OCR takes is left off its clock (OCR has its own page and time budget)."""

from __future__ import annotations

import io
import logging
import re
import time
from typing import TYPE_CHECKING

from ingest.formats.builder import DocBuilder
from ingest.formats.ocr import DEFAULT_OCR, OcrOptions
from ingest.limits import ParseBudget, ParseLimits
from rag.errors import ParseError
from rag.types import ParsedDocument

if TYPE_CHECKING:
    from ingest.formats.pdf_ocr import PdfScans

log = logging.getLogger(__name__)

_TERMINAL = tuple(".!?;:。！？；：…\"'”’)")
_NO_HEADING_END = tuple(".,;:!?-–—。，；：！？、")
_BULLET_RE = re.compile(r"^(?:[•●▪■◦○·‣⁃*\-–]\s+|\(?\d{1,3}[.)]\s+|\(?[a-z][.)]\s+)")
_SYMBOL_BULLET_RE = re.compile(r"^[•●▪■◦○·‣⁃*\-–]\s+")
_NUMBERED_HEADING_RE = re.compile(r"^(\d+(?:\.\d+)*)\s+\S")
_ZH_HEADING_RE = re.compile(r"^第[一二三四五六七八九十百千\d]+([章节篇部])")
_PAGE_NUMBER_RE = re.compile(r"^(?:(?:page|p\.)\s*\d+(?:\s*(?:/|of)\s*\d+)?|\d{1,4}|[-–—]\s*\d{1,4}\s*[-–—]|"
                             r"\d{1,4}\s*/\s*\d{1,4}|第\s*\d+\s*页(?:\s*共\s*\d+\s*页)?)$", re.IGNORECASE)
_HYPHEN_END_RE = re.compile(r"[a-z]{2}-$")
_HAS_LETTER_RE = re.compile(r"[^\W\d_]")


def parse_pdf(data: bytes, fmt: str, stem: str, *, ocr: OcrOptions = DEFAULT_OCR,
              budget: ParseBudget | None = None) -> ParsedDocument:
    """`budget`: the file's (a fresh one with the default limits when None)."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _decrypt(reader)
        pages = list(reader.pages)
    except DependencyError as exc:  # cryptography (a dependency) missing from this install
        raise ParseError(f"encrypted PDF: cannot decrypt it here: {exc}") from exc
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"corrupt PDF: {type(exc).__name__}: {exc}") from exc

    builder = DocBuilder(fmt)
    builder.metadata["pages"] = len(pages)
    budget = budget if budget is not None else ParseLimits().budget()
    scans = scans_for(data, ocr, stem, len(pages), builder)
    try:
        for number, page in enumerate(pages, start=1):
            budget.tick()
            try:
                text = page.extract_text() or ""
            except (PyPdfError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s: cannot extract text from page %d: %s: %s", stem, number, type(exc).__name__, exc)
                text = ""
            if scans is not None and scans.wants(number, text):
                started = time.monotonic()
                scans.add(number)
                budget.exclude(time.monotonic() - started)
                continue
            for kind, para, depth in page_paragraphs(text):
                if kind == "title":
                    builder.heading(para, depth, page=number)
                else:
                    builder.add(para, kind, page=number)
    finally:  # closes PDFium on a budget stop too
        if scans is not None:
            scans.finish()
    if builder.is_empty:
        raise ParseError(no_text_reason(builder.metadata, ocr))
    if builder.title is None:
        builder.title = _metadata_title(reader)
    return builder.build(stem)


def scans_for(data: bytes, ocr: OcrOptions, stem: str, pages: int, builder: DocBuilder) -> PdfScans | None:
    """What OCRs the scanned pages (ingest/formats/pdf_ocr.py), or None when OCR is off."""
    if not ocr.enabled:
        return None
    from ingest.formats.pdf_ocr import PdfScans

    return PdfScans(data, ocr, stem, pages, builder)


def no_text_reason(metadata: dict, ocr: OcrOptions) -> str:
    if not ocr.enabled:
        return f"no extractable text: the PDF has no text layer (scanned pages need OCR, which is off: {ocr.off_by})"
    skipped = metadata.get("ocr_skipped")
    if skipped:
        return f"no extractable text: no text layer, and OCR found none ({'; '.join(skipped[:3])})"
    return "no extractable text: the PDF has no text layer and nothing to OCR"


def _decrypt(reader) -> None:  # noqa: ANN001 - pypdf.PdfReader
    """Many PDFs are encrypted with an empty user password (an owner password restricts copying
    or printing only): they open with "". AES needs the `cryptography` package."""
    from pypdf.errors import PyPdfError

    try:
        result = reader.decrypt("")
    except (PyPdfError, NotImplementedError) as exc:
        raise ParseError(f"encrypted PDF: {exc}") from exc
    if not result:
        raise ParseError("encrypted: the PDF needs a password to open")


def _metadata_title(reader) -> str | None:  # noqa: ANN001
    try:
        title = (reader.metadata or {}).get("/Title")
    except (ValueError, KeyError, TypeError):
        return None
    title = " ".join(str(title or "").split())
    return title or None


def page_paragraphs(text: str) -> list[tuple[str, str, int]]:
    """Regroup one page's extracted lines into `(kind, text, heading_depth)` paragraphs.
    A paragraph ends at a blank line or at a short line ending a sentence; a heading is a
    short standalone line without closing punctuation; bullets start list items."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = _drop_page_numbers(lines)
    width = max((len(line) for line in lines), default=0)
    paragraphs: list[tuple[str, str, int]] = []
    current: list[str] = []
    kind = "text"
    at_start = True  # the previous line closed a paragraph

    def flush() -> None:
        nonlocal current, kind
        if current:
            paragraphs.append((kind, join_lines(current), 0))
        current, kind = [], "text"

    for line in lines:
        if not line:
            flush()
            at_start = True
            continue
        if _BULLET_RE.match(line) and not _NUMBERED_HEADING_RE.match(line):
            flush()
            kind = "list"
            line = _SYMBOL_BULLET_RE.sub("", line)
        elif at_start and _is_heading(line, width):
            flush()
            paragraphs.append(("title", line, heading_depth(line)))
            continue
        elif at_start:
            flush()
        current.append(line)
        at_start = line.endswith(_TERMINAL) and len(line) < 0.8 * width
    flush()
    return paragraphs


def _drop_page_numbers(lines: list[str]) -> list[str]:
    """Remove a lone page number ("3", "Page 3 of 9", "- 3 -", "第 3 页") at the top or bottom."""
    kept = list(lines)
    for index in (0, -1):
        while kept and not kept[index]:
            kept.pop(index)
        if kept and _PAGE_NUMBER_RE.match(kept[index]):
            kept.pop(index)
    return kept


def _is_heading(line: str, width: int) -> bool:
    if len(line) > 80 or line.endswith(_NO_HEADING_END) or not _HAS_LETTER_RE.search(line):
        return False
    if len(line.split()) > 12 or (width >= 30 and len(line) > 0.7 * width):
        return False
    first = line[0]
    if first.isdigit():
        return _NUMBERED_HEADING_RE.match(line) is not None
    return first.isupper() or "\u4e00" <= first <= "\u9fff"


def heading_depth(line: str) -> int:
    """"2" -> 0, "2.1" -> 1, "2.1.3" -> 2; 第一章 -> 0, 第一节 -> 1; others 0."""
    numbered = _NUMBERED_HEADING_RE.match(line)
    if numbered:
        return numbered.group(1).count(".")
    chinese = _ZH_HEADING_RE.match(line)
    if chinese:
        return 1 if chinese.group(1) == "节" else 0
    return 0


def join_lines(lines: list[str]) -> str:
    """Join wrapped lines with a space, undoing end-of-line hyphenation only when a lowercase
    word continues in lowercase ("infor-" + "mation"). Spaces between CJK characters are
    removed later by the builder's cleaning."""
    out = lines[0]
    for line in lines[1:]:
        if _HYPHEN_END_RE.search(out) and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}"
    return out
