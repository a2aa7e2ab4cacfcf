"""CSV, TSV and XLSX. Tabular files are read with the stdlib csv module and openpyxl rather
than unstructured's partition_csv/partition_xlsx, which collapse a table into one element (its
HTML would have to be parsed back into rows). The first non-empty row is the header; every
other row becomes one self-describing `table_row` block, and question/answer columns also
become `QAPair`s."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import zipfile
from collections.abc import Sequence
from typing import Any

from ingest.formats.builder import DocBuilder, row_text
from rag.errors import ParseError
from rag.types import ParsedDocument

QUESTION_KEYS = frozenset({"question", "questions", "q", "query", "问题", "问", "提问"})
ANSWER_KEYS = frozenset({"answer", "answers", "a", "response", "答案", "答", "回答"})
_DELIMITERS = (",", ";", "\t", "|")


def normalize_key(name: object) -> str:
    return str(name or "").strip().rstrip(":：").strip().lower()


def qa_columns(header: Sequence[object]) -> tuple[int, int] | None:
    """Indexes of the question and answer columns (case-insensitive names), or None."""
    keys = [normalize_key(h) for h in header]
    question = next((i for i, k in enumerate(keys) if k in QUESTION_KEYS), None)
    answer = next((i for i, k in enumerate(keys) if k in ANSWER_KEYS), None)
    if question is None or answer is None or question == answer:
        return None
    return question, answer


def parse_delimited(text: str, fmt: str, encoding: str, stem: str, delimiter: str | None = None) -> ParsedDocument:
    text = text.replace("\x00", "")
    if delimiter is None:
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        delimiter = max(_DELIMITERS, key=lambda d: (first_line.count(d), d == ","))
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise ParseError(f"malformed {fmt.upper()}: {exc}") from exc
    builder = DocBuilder(fmt)
    builder.metadata["encoding"] = encoding
    add_rows(builder, rows)
    return builder.build(stem)


def parse_xlsx(data: bytes, fmt: str, stem: str) -> ParsedDocument:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as exc:
        logging.getLogger(__name__).info("%s: corrupt XLSX: %s: %s", stem, type(exc).__name__, exc)
        raise ParseError("corrupt XLSX: not a readable Excel workbook") from exc
    builder = DocBuilder(fmt)
    try:
        sheets = workbook.worksheets
        builder.metadata["sheets"] = [sheet.title for sheet in sheets]
        for sheet in sheets:
            rows = [[cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
            builder.reset_sections((sheet.title,))
            add_rows(builder, rows)
    finally:
        workbook.close()
    return builder.build(stem)


def add_rows(builder: DocBuilder, rows: Sequence[Sequence[Any]]) -> None:
    """Header + one block per data row; a table with a single row has no header."""
    rows = [[str(c) if c is not None else "" for c in row] for row in rows]
    rows = [row for row in rows if any(c.strip() for c in row)]
    if not rows:
        return
    if len(rows) == 1:
        builder.add(row_text(None, rows[0]), "table_row")
        builder.end_table()
        return
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    qa = qa_columns(header)
    for row in rows[1:]:
        block = builder.add(row_text(header, row), "table_row")
        if block is not None and qa is not None:
            q, a = qa
            builder.add_qa(row[q] if q < len(row) else "", row[a] if a < len(row) else "", block)
    builder.end_table()


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)
