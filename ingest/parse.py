"""`parse_file(path)` / `parse_bytes(data, suffix, name)` -> `ParsedDocument` for every supported format.

Files over `RAG_MAX_FILE_MB` are refused, and zip containers (DOCX, XLSX) are checked for
decompression bombs first (ingest/limits.py). Text formats are decoded first (UTF-8 with or without
BOM, UTF-16, mostly-UTF-8 with a few bad bytes replaced, GB18030/GBK, then a charset-normalizer
guess) and handed to unstructured's element-aware partitioners as text (large plain text and
Markdown to the linear parser in formats/plain.py); PDF
goes through pypdf page by page (scanned pages and image files through OCR, ingest/formats/ocr.py);
tables and JSON are read row by row / record by record. Every reader but the image one (OCR has
its own bounds) charges one `ParseBudget` per file (rows, cells, seconds: ingest/limits.py). Only
regular files are opened (`read_file`): a named pipe, socket or device is refused before it can
block. Every failure leaves as `ParseError` (or `UnsupportedFile`) with a one-line human reason; an
expected parse failure (broken XML inside an Office file, a corrupt zip) keeps its traceback at
debug level only."""

from __future__ import annotations

import functools
import logging
import os
import re
import stat
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import ParseError as EtreeParseError

from ingest.formats.encoding import decode_text
from ingest.formats.images import IMAGE_FORMATS
from ingest.formats.ocr import DEFAULT_OCR, OcrOptions
from ingest.limits import ParseBudget, ParseLimits, check_file_size, check_zip
from rag.errors import ParseError, RagError, UnsupportedFile
from rag.types import ParsedDocument

log = logging.getLogger(__name__)

_TEXT_FORMATS = {".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".csv": "csv",
                 ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BINARY_FORMATS = {".pdf": "pdf", ".docx": "docx", ".xlsx": "xlsx", **IMAGE_FORMATS}
OCR_SUFFIXES: frozenset[str] = frozenset({".pdf", *IMAGE_FORMATS})  # what the OCR setting can change
_ZIP_FORMATS = frozenset({".docx", ".xlsx"})  # checked by check_zip before any parser opens them
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_TEXT_FORMATS) | frozenset(_BINARY_FORMATS)
# formats we cannot read but whose users deserve to know what to do
_LEGACY_HINTS = {".doc": "legacy binary Word format: save it as .docx",
                 ".xls": "legacy binary Excel format: save it as .xlsx",
                 ".ppt": "legacy binary PowerPoint format: not supported"}
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def parse_file(path: Path, limits: ParseLimits | None = None, ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    """Parse one file. `metadata["format"]` is the format name ("txt", "md", "html", "pdf",
    "docx", "csv", "tsv", "xlsx", "json", "jsonl", "png", "jpeg", "tiff", "bmp", "webp"); PDFs
    add "pages", text formats "encoding"; OCR'd documents "ocr_pages", "ocr_spans", "ocr_seconds"."""
    path = Path(path)
    limits = limits or ParseLimits()
    _check_suffix(path.suffix.lower(), path.name)
    data, _ = read_file(path, limits)
    return parse_bytes(data, path.suffix, path.name, limits, ocr)


def parse_bytes(data: bytes, suffix: str, name: str, limits: ParseLimits | None = None,
                ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    """Parse the bytes of a file called `name` (its title falls back to the name's stem)."""
    limits = limits or ParseLimits()
    suffix = suffix.lower()
    _check_suffix(suffix, name)
    check_file_size(len(data), limits)
    if not data:
        raise ParseError("empty file", field="path")
    started = time.perf_counter()
    budget = limits.budget()
    if suffix in _ZIP_FORMATS:
        from ingest.formats.office import refuse_ole

        refuse_ole(data, suffix.lstrip("."))  # a password-protected or legacy file is no zip at all
        check_zip(data, limits, suffix.lstrip(".").upper())
    try:
        doc = _dispatch(suffix, data, Path(name).stem, limits, budget, ocr)
    except RagError:
        raise
    except (EtreeParseError, zipfile.BadZipFile, RecursionError, *_lxml_errors()) as exc:
        # expected for a damaged or hostile file: the caller logs the reason in one line
        log.debug("cannot parse %s", name, exc_info=True)
        raise ParseError(f"corrupt {suffix.lstrip('.').upper()}: {_short(exc)}", field="path") from exc
    except Exception as exc:  # the one boundary that turns a parser crash into a ParseError
        # the client gets a short reason; the exception (whose repr may name internal objects) is logged
        log.exception("parser crashed on %s", name)
        raise ParseError(f"cannot parse this {suffix.lstrip('.').upper()} file ({type(exc).__name__})",
                         field="path") from exc
    if not doc.text or doc.text.isspace():
        raise ParseError("no extractable text", field="path")
    log.debug("parsed %s (%s) in %.3f s: %d blocks, %d QA pairs", name, doc.metadata.get("format"),
              time.perf_counter() - started, len(doc.blocks), len(doc.qa_pairs))
    return doc


def unsupported_reason(path: Path) -> str:
    """Why a file with an unsupported suffix is skipped, with a hint for legacy Office files."""
    suffix = path.suffix.lower()
    hint = _LEGACY_HINTS.get(suffix)
    return f"unsupported file type '{suffix or path.name}'" + (f" ({hint})" if hint else "")


def _check_suffix(suffix: str, name: str) -> None:
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedFile(f"{unsupported_reason(Path(name))} (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})",
                              field="path")


def read_file(path: Path, limits: ParseLimits) -> tuple[bytes, os.stat_result]:
    """The bytes and stat of a regular file (a symbolic link is followed). The file is opened
    without blocking and checked on the open descriptor, so a named pipe, socket or device (even
    behind a link, or swapped in after a scan) is refused instead of hanging the reader; so is a
    file over `RAG_MAX_FILE_MB`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ParseError(f"file not found: {path}", field="path") from exc
    except PermissionError as exc:
        raise ParseError(f"unreadable file (permission denied): {path}", field="path") from exc
    except OSError as exc:  # ENXIO: a socket, or a pipe opened for writing only
        raise ParseError(f"unreadable file: {exc.strerror or exc}", field="path") from exc
    with os.fdopen(fd, "rb", closefd=True) as handle:
        info = os.fstat(fd)
        reason = not_regular_reason(info.st_mode)
        if reason:
            raise ParseError(reason, field="path")
        check_file_size(info.st_size, limits)
        os.set_blocking(fd, True)
        try:
            data = handle.read(limits.max_file_bytes + 1)  # a file growing past the limit meanwhile stops here
        except OSError as exc:
            raise ParseError(f"unreadable file: {exc.strerror or exc}", field="path") from exc
    check_file_size(len(data), limits)
    return data, info


def not_regular_reason(mode: int) -> str:
    """Why a file of this `st_mode` is not read, or "" for a regular file."""
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
    return f"not a regular file ({kind}): only regular files are read"


def _lxml_errors() -> tuple[type[Exception], ...]:
    from lxml import etree

    return (etree.XMLSyntaxError,)


def _short(exc: Exception) -> str:
    """A library's message on one line, cut short: "broken XML (Comment too big found, line 2 ...)"."""
    text = " ".join(str(exc).split())[:160]
    return f"broken XML ({text})" if isinstance(exc, (EtreeParseError, *_lxml_errors())) else (
        f"{type(exc).__name__} ({text})" if text else type(exc).__name__)


def _dispatch(suffix: str, data: bytes, stem: str, limits: ParseLimits, budget: ParseBudget,
              ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    if suffix in _BINARY_FORMATS:
        fmt = _BINARY_FORMATS[suffix]
        return _binary_parser(fmt, budget, ocr)(data, fmt, stem)
    fmt = _TEXT_FORMATS[suffix]
    declared = None
    if fmt == "html":
        match = _META_CHARSET_RE.search(data[:4096])
        declared = match.group(1).decode("ascii") if match else None
    decoded = decode_text(data, declared)
    budget.tick()
    if not decoded.text or decoded.text.isspace():
        raise ParseError("empty file (only whitespace)", field="path")
    if fmt in ("txt", "md") and len(data) > limits.large_text_bytes:
        from ingest.formats.plain import parse_large_text

        doc = parse_large_text(decoded.text, fmt, decoded.encoding, stem, budget)
    else:
        doc = _text_parser(fmt, budget)(decoded.text, fmt, decoded.encoding, stem)
    if decoded.replaced:
        doc.metadata["note"] = f"decoded as UTF-8, {decoded.replaced} invalid byte(s) replaced"
    return doc


TextParser = Callable[[str, str, str, str], ParsedDocument]
BinaryParser = Callable[[bytes, str, str], ParsedDocument]


def _text_parser(fmt: str, budget: ParseBudget) -> TextParser:
    # imported per call: each format module pulls its own third-party parser lazily
    if fmt in ("csv", "tsv"):
        from ingest.formats.tables import parse_delimited

        delimiter = "\t" if fmt == "tsv" else None
        return lambda text, f, enc, stem: parse_delimited(text, f, enc, stem, delimiter, budget)
    if fmt in ("json", "jsonl"):
        from ingest.formats.records import parse_json

        return lambda text, f, enc, stem: parse_json(text, f, enc, stem, lines=fmt == "jsonl", budget=budget)
    from ingest.formats import elements

    parser = {"txt": elements.parse_text, "md": elements.parse_markdown, "html": elements.parse_html}[fmt]
    return functools.partial(parser, budget=budget)


def _binary_parser(fmt: str, budget: ParseBudget, ocr: OcrOptions = DEFAULT_OCR) -> BinaryParser:
    if fmt == "pdf":
        from ingest.formats.pdf import parse_pdf

        return functools.partial(parse_pdf, ocr=ocr, budget=budget)
    if fmt in IMAGE_FORMATS.values():
        from ingest.formats.images import parse_image

        return functools.partial(parse_image, ocr=ocr)
    if fmt == "xlsx":
        from ingest.formats.tables import parse_xlsx

        return functools.partial(parse_xlsx, budget=budget)
    from ingest.formats.elements import parse_docx

    return functools.partial(parse_docx, budget=budget)
