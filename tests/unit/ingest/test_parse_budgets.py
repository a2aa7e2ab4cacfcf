"""Parsers with budgets (rows, cells, seconds per file), bomb-like spreadsheets in linear time,
only regular files read (a named pipe never hangs ingest), and one log line for an expected
parse failure."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.limits import ParseLimits
from ingest.parse import parse_bytes, parse_file
from ingest.runner import scan_folder
from ingest.service import build_ingestor
from rag.errors import ParseError
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit import fixtures_files as ff
from tests.unit.cli_helpers import run

GOOD = "The Zephyr kettle warranty lasts three years from the date of purchase. " * 20


def _services(data_dir: Path, **settings):
    return build_services(Settings(data_dir=data_dir, **settings), embedder=HashEmbedder(dim=64))


def _timed(path: Path, limits: ParseLimits | None = None) -> tuple[float, object]:
    started = time.perf_counter()
    try:
        result: object = parse_file(path, limits)
    except ParseError as exc:
        result = exc
    return time.perf_counter() - started, result


# ---- bomb-like spreadsheets ---------------------------------------------------------------------
def test_a_tall_spreadsheet_parses_in_linear_time(tmp_path):
    small = ff.write_tall_xlsx(tmp_path, "small.xlsx", member_mb=2)
    large = ff.write_tall_xlsx(tmp_path, "large.xlsx", member_mb=4)
    _timed(small)  # warm the imports
    t_small, doc_small = _timed(small)
    t_large, doc_large = _timed(large)
    assert len(doc_large.blocks) > 1.9 * len(doc_small.blocks)
    assert t_large < 3 * t_small + 0.5, (t_small, t_large)  # twice the rows, about twice the time


def test_a_bomb_like_spreadsheet_stops_at_the_row_budget_with_the_setting_named(tmp_path):
    # 16 MB of sheet XML in a ~0.6 MB file (27:1, under RAG_MAX_ZIP_RATIO): 226,000 rows
    path = ff.write_tall_xlsx(tmp_path, "bomb.xlsx", member_mb=16)
    assert path.stat().st_size < 1024 * 1024
    seconds, result = _timed(path)
    assert isinstance(result, ParseError)
    assert result.message == "too many rows: over 200000 (RAG_PARSE_MAX_ROWS=200000)"
    assert seconds < 30


def test_rows_far_to_the_right_are_charged_to_the_cell_budget(tmp_path):
    path = ff.write_tall_xlsx(tmp_path, "wide.xlsx", member_mb=0.1, far_column="XFD")  # 16,384 cells a row
    seconds, result = _timed(path, ParseLimits(max_cells=1_000_000))
    assert isinstance(result, ParseError) and "RAG_PARSE_MAX_CELLS=1000000" in result.message
    assert seconds < 10


def _csv(rows: int) -> bytes:
    return ("question,answer\n" + "".join(f"q{i}?,answer {i}\n" for i in range(rows))).encode()


def _jsonl(rows: int) -> bytes:
    return "".join(json.dumps({"q": f"q{i}?", "a": f"answer {i}"}) + "\n" for i in range(rows)).encode()


def _json(rows: int) -> bytes:
    return json.dumps([{"title": f"t{i}", "text": f"text {i}"} for i in range(rows)]).encode()


def _tsv(rows: int) -> bytes:
    return _csv(rows).replace(b",", b"\t")


@pytest.mark.parametrize("suffix,make", [(".csv", _csv), (".tsv", _tsv), (".jsonl", _jsonl), (".json", _json)])
def test_every_table_and_record_reader_has_the_row_budget(suffix, make):
    with pytest.raises(ParseError, match=r"too many rows: over 100 \(RAG_PARSE_MAX_ROWS=100\)"):
        parse_bytes(make(500), suffix, f"big{suffix}", ParseLimits(max_rows=100))
    assert parse_bytes(make(50), suffix, f"small{suffix}", ParseLimits(max_rows=100)).blocks


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".xlsx", ".txt", ".md"])
def test_every_reader_has_the_time_budget(tmp_path, suffix):
    if suffix == ".xlsx":
        data = ff.write_tall_xlsx(tmp_path, member_mb=0.2).read_bytes()
    elif suffix in (".txt", ".md"):  # the large-text path (over 1 MB)
        data = ("A paragraph about kettles and their warranty terms.\n\n" * 30_000).encode()
    else:
        data = {".csv": _csv, ".jsonl": _jsonl, ".json": _json}[suffix](2000)
    with pytest.raises(ParseError, match=r"parsing took too long: .*\(RAG_PARSE_MAX_SECONDS=1e-09\)"):
        parse_bytes(data, suffix, f"slow{suffix}", ParseLimits(max_seconds=1e-9))


def test_files_over_budget_are_skipped_with_the_reason_and_the_rest_is_indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    ff.write_tall_xlsx(docs, "tall.xlsx", member_mb=0.5)  # ~7,000 rows
    (docs / "big.csv").write_bytes(_csv(5000))
    (docs / "faq.csv").write_bytes(_csv(20))
    (docs / "good.txt").write_text(GOOD, encoding="utf-8")
    services = _services(tmp_path / "data", parse_max_rows=1000)
    report = build_ingestor(services, "kb").ingest_folder(docs)
    skipped = {f.source: f.reason for f in report.skipped}
    assert skipped == {"tall.xlsx": "too many rows: over 1000 (RAG_PARSE_MAX_ROWS=1000)",
                       "big.csv": "too many rows: over 1000 (RAG_PARSE_MAX_ROWS=1000)"}
    assert sorted(f.source for f in report.files if f.status == "indexed") == ["faq.csv", "good.txt"]


# ---- the element readers (unstructured) and PDF text: the time budget per element and page ------------
SENTENCE = "says the kettle warranty lasts three years from the date of purchase."


def _paragraphs(n: int) -> list[str]:
    return [f"Paragraph {i} {SENTENCE}" for i in range(n)]


def _docx(n: int) -> bytes:
    from docx import Document

    document = Document()
    for text in _paragraphs(n):
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _pdf(pages: int) -> bytes:
    """`pages` copies of one page of 40 text lines (fpdf2 writes one, pypdf repeats it: fast)."""
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    pdf = FPDF()
    pdf.set_font("helvetica", size=9)
    pdf.add_page()
    pdf.multi_cell(0, 5, "\n".join(f"Line {j} {SENTENCE}" for j in range(40)))
    page = PdfReader(io.BytesIO(bytes(pdf.output()))).pages[0]
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _slow_file(suffix: str, n: int = 600) -> bytes:
    """A file of `suffix` that takes about a second or more to parse (under 1 MB: unstructured's path)."""
    if suffix == ".docx":
        return _docx(n)
    if suffix == ".pdf":
        return _pdf(n // 2)
    if suffix == ".html":
        return ("<html><body>" + "".join(f"<p>{t}</p>" for t in _paragraphs(n)) + "</body></html>").encode()
    return "\n\n".join(_paragraphs(n)).encode()  # .txt, .md


@pytest.fixture(scope="module")
def warm_parsers():
    """Import unstructured and load its spaCy model once, so that a budget measures the parse alone."""
    parse_bytes(GOOD.encode(), ".txt", "warm.txt")
    parse_bytes(_docx(5), ".docx", "warm.docx")


@pytest.mark.parametrize("suffix", [".docx", ".html", ".txt", ".md", ".pdf"])
def test_element_and_pdf_readers_stop_at_the_time_budget(suffix, warm_parsers):
    data = _slow_file(suffix)
    assert len(data) < ParseLimits().large_text_bytes
    started = time.perf_counter()
    with pytest.raises(ParseError, match=r"parsing took too long: stopped at \d+\.\d s \(RAG_PARSE_MAX_SECONDS=0\.2\)"):
        parse_bytes(data, suffix, f"slow{suffix}", ParseLimits(max_seconds=0.2))
    assert time.perf_counter() - started < 5  # stopped at the next element or page, not at the end
    assert parse_bytes(_slow_file(suffix, 20), suffix, f"small{suffix}", ParseLimits(max_seconds=60)).blocks


def test_pdf_ocr_time_is_left_to_the_ocr_budget(tmp_path):
    """Scanned pages are OCR'd under RAG_OCR_MAX_SECONDS_PER_FILE: their OCR is not charged to
    RAG_PARSE_MAX_SECONDS (three pages of 0.3 s each against a parse budget of 0.5 s)."""
    from ingest.formats.ocr import OcrOptions
    from tests.unit import ocr_fixtures as of

    class SlowEngine(of.ScriptedEngine):
        def recognize(self, image):
            time.sleep(0.3)
            return super().recognize(image)

    engine = SlowEngine()
    data = of.write_image_pdf(tmp_path, pages=3).read_bytes()
    doc = parse_bytes(data, ".pdf", "scan.pdf", ParseLimits(max_seconds=0.5), OcrOptions(engine=engine))
    assert doc.metadata["ocr_pages"] == [1, 2, 3] and len(engine.calls) == 3


def test_a_huge_docx_and_pdf_are_skipped_at_the_time_budget_and_the_rest_is_indexed(tmp_path, warm_parsers):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "huge.docx").write_bytes(_docx(1500))
    (docs / "huge.pdf").write_bytes(_pdf(600))
    (docs / "small.docx").write_bytes(_docx(3))
    (docs / "good.txt").write_text(GOOD, encoding="utf-8")
    (docs / "faq.csv").write_bytes(_csv(20))
    services = _services(tmp_path / "data", parse_max_seconds=0.5)
    started = time.perf_counter()
    report = build_ingestor(services, "kb").ingest_folder(docs)
    assert time.perf_counter() - started < 10
    skipped = {f.source: f.reason for f in report.skipped}
    assert sorted(skipped) == ["huge.docx", "huge.pdf"]
    assert all(re.fullmatch(r"parsing took too long: stopped at \d+\.\d s \(RAG_PARSE_MAX_SECONDS=0\.5\)", r)
               for r in skipped.values()), skipped
    assert sorted(f.source for f in report.files if f.status == "indexed") == ["faq.csv", "good.txt", "small.docx"]


@pytest.mark.parametrize("name", ["parse_max_rows", "parse_max_cells", "parse_max_seconds"])
def test_budget_settings_are_validated(name, monkeypatch):
    monkeypatch.setenv(f"RAG_{name.upper()}", "0")
    with pytest.raises(ValueError, match=name):
        Settings()


def test_the_streaming_xlsx_reader_keeps_dates_booleans_numbers_and_rich_text(tmp_path):
    import datetime as dt

    from openpyxl import Workbook
    from openpyxl.cell.rich_text import CellRichText, TextBlock
    from openpyxl.cell.text import InlineFont

    book = Workbook()
    sheet = book.active
    sheet.title = "Stock"
    sheet.append(["Model", "Since", "Price", "Count", "Active", "Note"])
    rich = CellRichText("bold ", TextBlock(InlineFont(b=True), "new"))
    sheet.append(["X200", dt.datetime(2024, 3, 1), 99.5, 3.0, True, rich])
    sheet["H2"] = "far"  # a gap in the row
    hidden = book.create_sheet("Hidden")
    hidden.sheet_state = "hidden"
    hidden.append(["only"])
    book.create_chartsheet("Chart")
    path = tmp_path / "stock.xlsx"
    book.save(path)
    doc = parse_file(path)
    assert doc.metadata["sheets"] == ["Stock", "Hidden"]  # worksheets only, as openpyxl lists them
    assert doc.text.split("\n\n")[0] == ("Model: X200 | Since: 2024-03-01 | Price: 99.5 | Count: 3 | "
                                          "Active: true | Note: bold new | far")


# ---- special files -------------------------------------------------------------------------------
def _returns(fn: Callable[[], object], fifo: Path, seconds: float = 20) -> object:
    """Run `fn` in a thread; if it is still blocked after `seconds` (on the pipe), open the pipe's
    other end so that it returns, and fail."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a blocked reader sees end of file
        os.close(writer)
        thread.join(10)
        pytest.fail(f"blocked on the named pipe {fifo.name} for {seconds} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


@pytest.fixture
def piped(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    os.mkfifo(docs / "pipe.txt")
    (docs / "linked_pipe.txt").symlink_to(docs / "pipe.txt")
    (docs / "good.txt").write_text(GOOD, encoding="utf-8")
    return docs


def test_the_folder_scan_skips_a_named_pipe_and_a_link_to_it(piped):
    scan = scan_folder(piped)
    assert [p.name for p in scan.files] == ["good.txt"]
    reason = "not a regular file (a named pipe): only regular files are read"
    assert {p.name: r for p, r in scan.skipped} == {"linked_pipe.txt": reason, "pipe.txt": reason}


def test_ingest_of_a_folder_with_a_named_pipe_returns(piped, tmp_path):
    ingestor = build_ingestor(_services(tmp_path / "data"), "kb")
    report = _returns(lambda: ingestor.ingest_folder(piped), piped / "pipe.txt")
    assert {f.source: f.status for f in report.files} == {"pipe.txt": "skipped", "linked_pipe.txt": "skipped",
                                                          "good.txt": "indexed"}


def test_a_named_pipe_given_directly_is_refused_not_read(piped, tmp_path):
    pipe = piped / "pipe.txt"
    for path in (pipe, piped / "linked_pipe.txt"):
        with pytest.raises(ParseError, match=r"not a regular file \(a named pipe\)"):
            _returns(lambda path=path: parse_file(path), pipe)
    ingestor = build_ingestor(_services(tmp_path / "data"), "kb")
    report = _returns(lambda: ingestor.ingest_files(piped, [pipe]), pipe)
    assert [(f.source, f.status, f.reason) for f in report.files] == [
        ("pipe.txt", "skipped", "not a regular file (a named pipe): only regular files are read")]


def test_rag_ingest_of_a_named_pipe_says_why_and_exits(piped, tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    result = _returns(lambda: run("ingest", str(piped / "pipe.txt"), "--quiet"), piped / "pipe.txt")
    assert result.exit_code == 1
    assert "pipe.txt: not a regular file (a named pipe)" in result.output
    assert "nothing could be ingested" in result.output


# ---- expected parse failures log one line ----------------------------------------------------------
def test_a_docx_with_a_comment_too_big_is_one_log_line(tmp_path, caplog):
    docs = tmp_path / "docs"
    docs.mkdir()
    ff.write_docx_with_huge_comment(docs, "commented.docx")
    (docs / "good.txt").write_text(GOOD, encoding="utf-8")
    with caplog.at_level(logging.INFO):
        report = build_ingestor(_services(tmp_path / "data"), "kb").ingest_folder(docs)
    reason = {f.source: f.reason for f in report.skipped}["commented.docx"]
    assert reason.startswith("corrupt DOCX: broken XML (Comment too big")
    about = [r for r in caplog.records if "commented.docx" in r.getMessage() or "Comment too big" in r.getMessage()]
    assert len(about) == 1 and about[0].levelno == logging.WARNING
    assert about[0].exc_info is None and "Traceback" not in caplog.text
    assert [f.source for f in report.files if f.status == "indexed"] == ["good.txt"]
