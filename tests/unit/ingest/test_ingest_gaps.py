"""What a real mixed folder showed (issue 10): .ndjson, copy-protected and password PDFs,
password-protected and legacy Office files, title rows above a table's header, Q&A tables with
any chunker, and progress while one large file embeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.uploads import check_type
from ingest.chunkers import make_chunker
from ingest.parse import parse_file
from ingest.runner import IngestProgress
from ingest.service import build_ingestor
from rag.errors import ParseError
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.types import ParsedDocument
from tests.unit import fixtures_files as ff

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "docs"


def texts(doc: ParsedDocument, kind: str | None = None) -> list[str]:
    return [doc.text[b.start : b.end] for b in doc.blocks if kind is None or b.kind == kind]


def services(tmp_path: Path, embedder: HashEmbedder | None = None, **settings):
    config = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="edge", **settings)
    return build_services(config, embedder=embedder or HashEmbedder(dim=64))


# ---- formats -----------------------------------------------------------------------------------
def test_ndjson_is_json_lines(tmp_path: Path) -> None:
    doc = parse_file(ff.write_ndjson(tmp_path))
    assert doc.metadata == {"format": "jsonl", "encoding": "utf-8", "records": 2}
    assert texts(doc) == ["The X200 battery was replaced under warranty.\nticket: 1",
                          "A Y300 screen arrived cracked.\nticket: 2"]
    check_type("events.ndjson")  # the upload API accepts it too (raises otherwise)


def test_copy_protected_aes_pdf_is_read(tmp_path: Path) -> None:
    path = ff.write_owner_password_pdf(tmp_path)
    from pypdf import PdfReader

    assert PdfReader(path).is_encrypted  # really encrypted (AES-256, owner password only)
    doc = parse_file(path)
    assert doc.metadata["pages"] == 2
    assert "1 Introduction" in texts(doc, "title") and "2 Repairs" in texts(doc, "title")


def test_pdf_that_needs_a_user_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="^encrypted: the PDF needs a password"):
        parse_file(ff.write_owner_password_pdf(tmp_path, "private.pdf", user_password="open-me"))


@pytest.mark.parametrize("name", ["locked.xlsx", "locked.docx"])
def test_password_protected_office_file(tmp_path: Path, name: str) -> None:
    path = ff.write_encrypted_office(tmp_path, name)
    assert path.read_bytes()[:8] == bytes.fromhex("D0CF11E0A1B11AE1")
    with pytest.raises(ParseError, match="^encrypted: the file needs a password"):
        parse_file(path)


@pytest.mark.parametrize("name, reason", [("old.xlsx", r"legacy binary Excel format \(\.xls\).*save as \.xlsx"),
                                          ("old.docx", r"legacy binary Word format \(\.doc\).*save as \.docx")])
def test_legacy_ole_file_under_a_new_name(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_file(ff.write_legacy_ole(tmp_path, name))


def test_mixed_folder_reasons(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    ff.write_owner_password_pdf(docs)
    ff.write_owner_password_pdf(docs, "private.pdf", user_password="open-me")
    ff.write_encrypted_office(docs, "locked.xlsx")
    ff.write_ndjson(docs)
    (docs / "budget.xls").write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 504)
    report = build_ingestor(services(tmp_path), "mixed").ingest_folder(docs)
    by_source = {f.source: f for f in report.files}
    assert by_source["protected.pdf"].status == "indexed" and by_source["protected.pdf"].chunks_added > 0
    assert by_source["events.ndjson"].status == "indexed"
    assert by_source["private.pdf"].reason == "encrypted: the PDF needs a password to open"
    assert by_source["locked.xlsx"].reason.startswith("encrypted: the file needs a password")
    assert by_source["budget.xls"].reason == ("unsupported file type '.xls' "
                                              "(legacy binary Excel format: save it as .xlsx)")


# ---- title rows above the header -----------------------------------------------------------------
def test_csv_title_row_is_a_heading_not_the_header(tmp_path: Path) -> None:
    doc = parse_file(ff.write_title_row_csv(tmp_path))
    assert doc.title == "Stanley Cups"
    assert texts(doc, "title") == ["Stanley Cups"]
    assert texts(doc, "table_row") == ["Team: Blues | Location: STL | Stanley Cups: 1",
                                       "Team: Flyers | Location: PHI | Stanley Cups: 2",
                                       "Team: Maple Leafs | Location: TOR | Stanley Cups: 13"]
    assert {b.section_path for b in doc.blocks} == {("Stanley Cups",)}


def test_several_title_rows_and_a_semicolon_table(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("Sales report 2024\n;;Source: finance;\nRegion;Quarter;Units;Revenue\nNorth;Q1;120;1 200\n"
                    "South;Q1;80;800\nNorth;Q2;;1 500\n", encoding="utf-8")
    doc = parse_file(path)
    assert doc.title == "Sales report 2024"
    assert texts(doc, "text") == ["Source: finance"]
    assert texts(doc, "table_row")[0] == "Region: North | Quarter: Q1 | Units: 120 | Revenue: 1 200"
    assert texts(doc, "table_row")[2] == "Region: North | Quarter: Q2 | Revenue: 1 500"


@pytest.mark.parametrize("content, first_row", [
    # a sparse first row followed by data (numbers), not by a header: the first row stays the header
    ("id,,\n1,Blues,STL\n2,Flyers,PHI\n", "id: 1 | column 2: Blues | column 3: STL"),
    # an ordinary table
    ("Team,Location,Cups\nBlues,STL,1\n", "Team: Blues | Location: STL | Cups: 1"),
    # a repeated name is not a header
    ("Teams,,\nBlues,Blues,STL\nFlyers,PHI,PHI\nLeafs,TOR,TOR\n", "Teams: Blues | column 2: Blues | column 3: STL"),
])
def test_header_stays_the_first_row_without_a_title_row(tmp_path: Path, content: str, first_row: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    doc = parse_file(path)
    assert texts(doc, "title") == [] and texts(doc, "table_row")[0] == first_row


def test_xlsx_sheet_title_row(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Cups"
    sheet.append(["Stanley Cups", None, None])
    sheet.append([None, None, None])
    sheet.append(["Team", "Location", "Stanley Cups"])
    sheet.append(["Blues", "STL", 1])
    sheet.append(["Flyers", "PHI", 2])
    workbook.save(tmp_path / "cups.xlsx")
    doc = parse_file(tmp_path / "cups.xlsx")
    assert texts(doc, "table_row") == ["Team: Blues | Location: STL | Stanley Cups: 1",
                                       "Team: Flyers | Location: PHI | Stanley Cups: 2"]
    assert {b.section_path for b in doc.blocks if b.kind == "table_row"} == {("Cups", "Stanley Cups")}


# ---- Q&A tables with any chunker -----------------------------------------------------------------
@pytest.mark.parametrize("question, answer", [
    ("question", "answer"), (" Question: ", "ANSWER"), ("Q", "A"), ("questions", "answers"), ("query", "response"),
    ("FAQ", "Answer"), ("问题", "答案"), ("问", "答"), ("问题", "回答"), ("提问", "回答"), ("标准问题", "标准答案"),
    ("问题：", "答案："), ("Ｑ", "Ａ"),
])
def test_qa_header_names(tmp_path: Path, question: str, answer: str) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(f"id,{question},{answer}\n1,保修期是多久？,两年。\n2,How long is the warranty?,Two years.\n",
                    encoding="utf-8")
    spans = make_chunker("recursive").split(parse_file(path))
    assert [(s.kind, s.embed_text) for s in spans] == [("qa", "保修期是多久？"), ("qa", "How long is the warranty?")]
    assert spans[0].text == "Q: 保修期是多久？\nA: 两年。"


@pytest.mark.parametrize("name", ["recursive", "semantic", "qa"])
def test_qa_rows_are_one_chunk_each_whatever_the_chunker(tmp_path: Path, name: str) -> None:
    doc = parse_file(ff.write_xlsx(tmp_path))  # sheet FAQ (问题/答案) + sheet Prices (a plain table)
    spans = make_chunker(name, size=500, overlap=50, embedder=HashEmbedder())
    spans = spans.split(doc)
    qa = [s for s in spans if s.kind == "qa"]
    assert [s.embed_text for s in qa] == [q for q, _ in ff.QA_ROWS]
    rest = [s for s in spans if s.kind != "qa"]
    assert rest and all(s.section_path == ("Prices",) and s.embed_text is None for s in rest)
    assert rest[0].text.startswith("Model: X200")


def test_json_and_html_qa_records_with_the_default_chunker(tmp_path: Path) -> None:
    chunker = make_chunker("recursive")
    spans = chunker.split(parse_file(ff.write_jsonl_qa(tmp_path)))
    assert [s.embed_text for s in spans] == [q for q, _ in ff.QA_ROWS]
    page = tmp_path / "faq.html"
    page.write_text("<html><body><p>Our FAQ.</p><table><tr><th>Question</th><th>Answer</th></tr>"
                    "<tr><td>Is there a warranty?</td><td>Yes, two years.</td></tr></table></body></html>",
                    encoding="utf-8")
    spans = chunker.split(parse_file(page))
    assert [(s.kind, s.embed_text) for s in spans] == [("text", None), ("qa", "Is there a warranty?")]


def test_readme_faq_demo_gives_four_qa_chunks_with_default_settings(tmp_path: Path) -> None:
    svc = services(tmp_path)
    assert svc.settings.chunker == "recursive"
    report = build_ingestor(svc, "demo").ingest_files(EXAMPLES, [EXAMPLES / "faq.csv"])
    assert report.files[0].status == "indexed" and report.files[0].chunks_added == 4
    kb = svc.kbs.open("demo")
    record = svc.catalog.find_doc_by_source("demo", "faq.csv")
    chunks = svc.store.get_payloads(kb.collection, record.chunk_ids)
    questions = sorted(p["embed_text"] for p in chunks.values())
    assert "如何申请加班费？" in questions and "How do I reset my password?" in questions
    assert all(p["kind"] == "qa" and p["text"].startswith("Q: ") for p in chunks.values())


# ---- progress --------------------------------------------------------------------------------------
def test_progress_moves_while_one_large_file_embeds(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text("\n\n".join(f"Paragraph {i} about the battery and its warranty terms. " * 3
                                              for i in range(120)), encoding="utf-8")
    (docs / "small.txt").write_text("A short note about screens.", encoding="utf-8")
    embedder = HashEmbedder(dim=64)
    steps: list[IngestProgress] = []
    ingestor = build_ingestor(services(tmp_path, embedder, chunk_size=200, chunk_overlap=20, embed_batch_size=16),
                              "big", progress=steps.append)
    report = ingestor.ingest_folder(docs)
    total = report.chunks_added
    assert total > 100
    while_big = [s for s in steps if s.files_done == 0 and s.chunks_embedded > 0]
    assert len(while_big) >= total // 16 - 1, "progress must tick after each embedding sub-batch"
    embedded = [s.chunks_embedded for s in while_big]
    assert embedded == sorted(embedded) and embedded[0] < embedded[-1] <= while_big[-1].chunks_known
    assert max(embedder.calls) <= 16
    last = steps[-1]
    assert (last.files_done, last.chunks_known, last.chunks_embedded, last.chunks_written) == (2, total, total, total)


def test_cli_progress_postfix_shows_chunks() -> None:
    import cli.main  # noqa: F401 - registers the commands (cli.ingest_cmds imports it)
    from cli.ingest_cmds import _Progress

    text = _Progress.postfix(IngestProgress("docs/big.txt", 0, 480, 96, 0), elapsed=4.0)
    assert text == "chunks 96/480 embedded  24.0 chunks/s  docs/big.txt"

