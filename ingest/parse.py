"""`parse_file(path) -> ParsedDocument` for every supported format.

Text formats are decoded first (UTF-8 with or without BOM, UTF-16, GB18030/GBK, then a
charset-normalizer guess) and handed to unstructured's element-aware partitioners as text; PDF
goes through pypdf page by page (scanned pages and image files through OCR, ingest/formats/ocr.py);
tables and JSON are read row by row / record by record. Every
failure leaves as `ParseError` (or `UnsupportedFile`) with a one-line human reason."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from ingest.formats.encoding import decode_bytes
from ingest.formats.images import IMAGE_FORMATS
from ingest.formats.ocr import DEFAULT_OCR, OcrOptions
from rag.errors import ParseError, RagError, UnsupportedFile
from rag.types import ParsedDocument

log = logging.getLogger(__name__)

_TEXT_FORMATS = {".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".csv": "csv",
                 ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}
_BINARY_FORMATS = {".pdf": "pdf", ".docx": "docx", ".xlsx": "xlsx", **IMAGE_FORMATS}
OCR_SUFFIXES: frozenset[str] = frozenset({".pdf", *IMAGE_FORMATS})  # what the OCR setting can change
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_TEXT_FORMATS) | frozenset(_BINARY_FORMATS)
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def parse_file(path: Path, ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    """Parse one file. `metadata["format"]` is the format name ("txt", "md", "html", "pdf",
    "docx", "csv", "tsv", "xlsx", "json", "jsonl", "png", "jpeg", "tiff", "bmp", "webp"); PDFs
    add "pages", text formats "encoding"; OCR'd documents "ocr_pages", "ocr_spans", "ocr_seconds"."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedFile(f"unsupported file type '{suffix or path.name}' "
                              f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})", field="path")
    data = _read(path)
    if not data:
        raise ParseError("empty file", field="path")
    started = time.perf_counter()
    try:
        doc = _dispatch(suffix, data, path.stem, ocr)
    except RagError:
        raise
    except Exception as exc:  # the one boundary that turns a parser crash into a ParseError
        log.exception("parser crashed on %s", path)
        raise ParseError(f"cannot parse {path.name}: {type(exc).__name__}: {exc}", field="path") from exc
    if not doc.text.strip():
        raise ParseError("no extractable text", field="path")
    log.debug("parsed %s (%s) in %.3f s: %d blocks, %d QA pairs", path.name, doc.metadata.get("format"),
              time.perf_counter() - started, len(doc.blocks), len(doc.qa_pairs))
    return doc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ParseError(f"file not found: {path}", field="path") from exc
    except PermissionError as exc:
        raise ParseError(f"unreadable file (permission denied): {path}", field="path") from exc
    except IsADirectoryError as exc:
        raise ParseError(f"not a file: {path}", field="path") from exc
    except OSError as exc:
        raise ParseError(f"unreadable file: {exc.strerror or exc}", field="path") from exc


def _dispatch(suffix: str, data: bytes, stem: str, ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    if suffix in _BINARY_FORMATS:
        fmt = _BINARY_FORMATS[suffix]
        return _binary_parser(fmt, ocr)(data, fmt, stem)
    fmt = _TEXT_FORMATS[suffix]
    declared = None
    if fmt == "html":
        match = _META_CHARSET_RE.search(data[:4096])
        declared = match.group(1).decode("ascii") if match else None
    text, encoding = decode_bytes(data, declared)
    if not text.strip():
        raise ParseError("empty file (only whitespace)", field="path")
    return _text_parser(fmt)(text, fmt, encoding, stem)


TextParser = Callable[[str, str, str, str], ParsedDocument]
BinaryParser = Callable[[bytes, str, str], ParsedDocument]


def _text_parser(fmt: str) -> TextParser:
    # imported per call: each format module pulls its own third-party parser lazily
    if fmt in ("csv", "tsv"):
        from ingest.formats.tables import parse_delimited

        delimiter = "\t" if fmt == "tsv" else None
        return lambda text, f, enc, stem: parse_delimited(text, f, enc, stem, delimiter)
    if fmt in ("json", "jsonl"):
        from ingest.formats.records import parse_json

        return lambda text, f, enc, stem: parse_json(text, f, enc, stem, lines=fmt == "jsonl")
    from ingest.formats import elements

    return {"txt": elements.parse_text, "md": elements.parse_markdown, "html": elements.parse_html}[fmt]


def _binary_parser(fmt: str, ocr: OcrOptions = DEFAULT_OCR) -> BinaryParser:
    if fmt == "pdf":
        from ingest.formats.pdf import parse_pdf

        return functools.partial(parse_pdf, ocr=ocr)
    if fmt in IMAGE_FORMATS.values():
        from ingest.formats.images import parse_image

        return functools.partial(parse_image, ocr=ocr)
    if fmt == "xlsx":
        from ingest.formats.tables import parse_xlsx

        return parse_xlsx
    from ingest.formats.elements import parse_docx

    return parse_docx
