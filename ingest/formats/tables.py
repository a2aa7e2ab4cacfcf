"""CSV, TSV and XLSX. Tabular files are read with the stdlib csv module and openpyxl rather
than unstructured's partition_csv/partition_xlsx, which collapse a table into one element (its
HTML would have to be parsed back into rows). The first non-empty row is the header, unless the
table opens with title rows (mostly empty, like "Stanley Cups,,") before a row that looks like
a header: those become a heading. Every other row becomes one self-describing `table_row`
block, and question/answer columns also become `QAPair`s. Rows stream from the reader into the
document (XLSX through the streaming reader in formats/xlsx.py), each charged to the file's
`ParseBudget`; the header is found within the first `HEAD_ROWS` non-empty rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import logging
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ingest.formats.builder import DocBuilder, row_text
from ingest.formats.office import refuse_ole
from ingest.limits import ParseBudget
from rag.errors import ParseError
from rag.types import ParsedDocument

log = logging.getLogger(__name__)

QUESTION_KEYS = frozenset({"question", "questions", "q", "query", "queries", "faq", "faqs", "问题", "问", "提问",
                           "标准问题", "常见问题", "问句", "用户问题", "相似问题"})
ANSWER_KEYS = frozenset({"answer", "answers", "a", "response", "responses", "reply", "答案", "答", "回答", "标准答案",
                         "解答", "答复", "回复"})
_DELIMITERS = (",", ";", "\t", "|")
_MAX_TITLE_ROWS = 5
HEAD_ROWS = 1000  # non-empty rows the header and the typical row width are judged on
_NUMBER_RE = re.compile(r"^(?=.*\d)[-+]?[\d.,\s%/:$€£¥-]+$")  # numbers, amounts, dates


def normalize_key(name: object) -> str:
    """Header or key name for matching: NFKC (full-width forms), trimmed, lower case, without a
    trailing colon or question mark."""
    key = unicodedata.normalize("NFKC", str(name or "")).strip().lower()
    return key.rstrip(":?").strip()


def qa_columns(header: Sequence[object]) -> tuple[int, int] | None:
    """Indexes of the question and answer columns (case-insensitive names), or None."""
    keys = [normalize_key(h) for h in header]
    question = next((i for i, k in enumerate(keys) if k in QUESTION_KEYS), None)
    answer = next((i for i, k in enumerate(keys) if k in ANSWER_KEYS), None)
    if question is None or answer is None or question == answer:
        return None
    return question, answer


def parse_delimited(text: str, fmt: str, encoding: str, stem: str, delimiter: str | None,
                    budget: ParseBudget) -> ParsedDocument:
    text = text.replace("\x00", "")
    if delimiter is None:
        # the first line that has a delimiter at all (a title line may have none)
        lines = [line for line in itertools.islice(text.splitlines(), 50) if line.strip()][:_MAX_TITLE_ROWS + 1]
        first_line = next((line for line in lines if any(d in line for d in _DELIMITERS)), "")
        delimiter = max(_DELIMITERS, key=lambda d: (first_line.count(d), d == ","))
    builder = DocBuilder(fmt)
    builder.metadata["encoding"] = encoding
    try:
        add_rows(builder, _charged(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), budget))
    except csv.Error as exc:
        raise ParseError(f"malformed {fmt.upper()}: {exc}") from exc
    return builder.build(stem)


def _charged(rows: Iterable[list[str]], budget: ParseBudget) -> Iterator[list[str]]:
    for row in rows:
        budget.row(len(row))
        yield row


def parse_xlsx(data: bytes, fmt: str, stem: str, budget: ParseBudget) -> ParsedDocument:
    from lxml import etree

    from ingest.formats.xlsx import iter_rows, open_workbook

    refuse_ole(data, fmt)
    builder = DocBuilder(fmt)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            book = open_workbook(archive, budget)
            builder.metadata["sheets"] = [sheet.title for sheet in book.sheets]
            for sheet in book.sheets:
                builder.reset_sections((sheet.title,))
                add_rows(builder, ([cell_text(v) for v in row] for row in iter_rows(book, sheet, budget)), depth=1)
    except (zipfile.BadZipFile, KeyError, ValueError, etree.XMLSyntaxError) as exc:
        log.info("%s: corrupt XLSX: %s: %s", stem, type(exc).__name__, exc)
        raise ParseError("corrupt XLSX: not a readable Excel workbook") from exc
    return builder.build(stem)


def add_rows(builder: DocBuilder, rows: Iterable[Sequence[Any]], depth: int = 0) -> None:
    """Title rows as a heading at `depth`, then the header and one block per data row; a table
    with a single row has no header. Rows are consumed as they come: only the first `HEAD_ROWS`
    non-empty ones are held, to find the header."""
    filled = (row for row in ([str(c) if c is not None else "" for c in row] for row in rows)
              if any(c.strip() for c in row))
    head = list(itertools.islice(filled, HEAD_ROWS))
    if not head:
        return
    if len(head) == 1:
        builder.add(row_text(None, head[0]), "table_row")
        builder.end_table()
        return
    first = header_index(head)
    for i, title_row in enumerate(head[:first]):
        title = " ".join(c.strip() for c in title_row if c.strip())
        if i == 0:
            builder.heading(title, depth)
        else:
            builder.add(title, "text")
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(head[first])]
    qa = qa_columns(header)
    for row in itertools.chain(head[first + 1 :], filled):
        block = builder.add(row_text(header, row), "table_row")
        if block is not None and qa is not None:
            q, a = qa
            builder.add_qa(row[q] if q < len(row) else "", row[a] if a < len(row) else "", block)
    builder.end_table()


def header_index(rows: Sequence[Sequence[str]]) -> int:
    """Where the header is: 0, unless the table opens with up to five mostly empty rows (at most
    half the table's typical number of filled cells) followed by a row that looks like a header
    (distinct, non-numeric cells) with at least one data row after it."""
    counts = [sum(1 for c in row if c.strip()) for row in rows]
    by_count = Counter(counts[1:])
    width = max(by_count, key=lambda n: (by_count[n], n))  # the most common row width, ties: wider
    if width < 2:
        return 0
    for i, count in enumerate(counts[: min(_MAX_TITLE_ROWS + 1, len(rows) - 1)]):
        if 2 * count > width:  # the first row that is not mostly empty
            return i if i and looks_like_header(rows[i]) else 0
    return 0


def looks_like_header(row: Sequence[str]) -> bool:
    cells = [c.strip() for c in row if c.strip()]
    names = {c.lower() for c in cells}
    return (len(names) == len(cells) and all(len(c) <= 100 for c in cells)
            and not any(_NUMBER_RE.match(c) for c in cells))


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
