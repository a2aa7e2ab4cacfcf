"""Parsing real files of every supported format: text, structure, offsets, QA pairs,
encodings and errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.formats.builder import clean_text
from ingest.formats.encoding import decode_bytes
from ingest.formats.pdf import join_lines, page_paragraphs
from ingest.parse import SUPPORTED_SUFFIXES, parse_file
from rag.errors import ParseError, UnsupportedFile
from rag.types import ParsedDocument
from tests.unit import fixtures_files as ff

ROOT = Path(__file__).resolve().parents[3]


def assert_consistent(doc: ParsedDocument) -> None:
    """Blocks are ordered, non-overlapping, trimmed, separated only by whitespace; QA pairs
    point at text that contains their question."""
    assert doc.blocks
    previous_end = 0
    for block in doc.blocks:
        piece = doc.text[block.start : block.end]
        assert piece and piece == piece.strip()
        assert block.start >= previous_end
        assert doc.text[previous_end : block.start].strip() == ""
        previous_end = block.end
    assert doc.text[previous_end:].strip() == ""
    for pair in doc.qa_pairs:
        assert pair.question in doc.text[pair.start : pair.end]
        assert pair.answer in doc.text[pair.start : pair.end]


def texts(doc: ParsedDocument, kind: str | None = None) -> list[str]:
    return [doc.text[b.start : b.end] for b in doc.blocks if kind is None or b.kind == kind]


def block_with(doc: ParsedDocument, needle: str):
    return next(b for b in doc.blocks if needle in doc.text[b.start : b.end])


def test_supported_suffixes() -> None:
    assert {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv", ".tsv", ".xlsx", ".json",
            ".jsonl", ".ndjson", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"} == SUPPORTED_SUFFIXES


# ---- text formats ------------------------------------------------------------------------------
def test_txt_utf8(tmp_path: Path) -> None:
    doc = parse_file(ff.write_txt_utf8(tmp_path))
    assert_consistent(doc)
    assert doc.title == "Acme Widget Manual"
    assert doc.metadata == {"format": "txt", "encoding": "utf-8"}
    assert doc.blocks[0].kind == "title"
    assert "Warranty: the X200 is covered for two years from the date of purchase." in texts(doc)
    assert all(b.section_path == ("Acme Widget Manual",) for b in doc.blocks)
    assert all(b.page is None for b in doc.blocks)


def test_txt_utf8_bom_is_dropped(tmp_path: Path) -> None:
    doc = parse_file(ff.write_txt_utf8(tmp_path, bom=True))
    assert doc.metadata["encoding"] == "utf-8-sig"
    assert "\ufeff" not in doc.text and doc.text.startswith("Acme Widget Manual")


def test_txt_gbk_chinese(tmp_path: Path) -> None:
    doc = parse_file(ff.write_txt_gbk(tmp_path))
    assert_consistent(doc)
    assert doc.metadata["encoding"] == "gb18030"
    assert doc.title == "产品说明"
    # a Chinese sentence is text even though unstructured's heuristics call it a title
    assert "本产品的保修期是自购买之日起两年。如有问题，请联系客服。" in texts(doc, "text")


@pytest.mark.parametrize("bom", [True, False])
def test_txt_utf16(tmp_path: Path, bom: bool) -> None:
    doc = parse_file(ff.write_txt_utf16(tmp_path, bom=bom))
    assert doc.metadata["encoding"].startswith("utf-16")
    assert "电池可以使用十个小时。" in texts(doc)


def test_decode_bytes_order() -> None:
    assert decode_bytes("héllo".encode()) == ("héllo", "utf-8")
    assert decode_bytes("保修期两年".encode("gbk")) == ("保修期两年", "gb18030")
    assert decode_bytes("Größe".encode("utf-16-le") * 20)[1] == "utf-16-le"


def test_latin1_text_is_not_mistaken_for_gbk(tmp_path: Path) -> None:
    path = tmp_path / "fr.txt"
    path.write_bytes("Garantie: deux années. Réparée gratuitement, très rapide et élégante.".encode("cp1252"))
    doc = parse_file(path)
    assert "Réparée gratuitement, très rapide et élégante." in doc.text
    assert doc.metadata["encoding"] != "gb18030"


def test_html_declared_charset(tmp_path: Path) -> None:
    path = tmp_path / "gbk.html"
    page = '<html><head><meta charset="gbk"><title>保修</title></head><body><p>保修期两年。</p></body></html>'
    path.write_bytes(page.encode("gbk"))
    doc = parse_file(path)
    assert doc.title == "保修" and doc.metadata["encoding"] == "gbk" and "保修期两年。" in doc.text


def test_markdown_nested_headings(tmp_path: Path) -> None:
    doc = parse_file(ff.write_md(tmp_path))
    assert_consistent(doc)
    assert doc.title == "Installation" and doc.metadata["format"] == "md"
    assert block_with(doc, "Install the package").section_path == ("Installation",)
    assert block_with(doc, "64-bit").section_path == ("Installation", "Requirements")
    assert block_with(doc, "64-bit").kind == "list"
    assert block_with(doc, "GPU build").section_path == ("Installation", "Requirements", "Optional extras")
    assert block_with(doc, "Run the").section_path == ("Usage",)  # a new "#" resets the stack
    assert block_with(doc, "acme --help").kind == "code"
    assert texts(doc, "table_row") == ["Option: -v | Meaning: verbose output", "Option: -q | Meaning: quiet mode"]
    rows = [b for b in doc.blocks if b.kind == "table_row"]
    assert doc.text[rows[0].end : rows[1].start] == "\n"  # rows of a table are joined by one newline


def test_html_title_headings_table(tmp_path: Path) -> None:
    doc = parse_file(ff.write_html(tmp_path))
    assert_consistent(doc)
    assert doc.title == "Acme Support Page"
    assert block_with(doc, "original card").section_path == ("Returns", "Refunds")
    assert texts(doc, "table_row") == ["Product: X200 | Price: 100 EUR", "Product: Y300 | Price: 250 EUR"]
    assert block_with(doc, "100 EUR").section_path == ("Returns", "Refunds")
    assert block_with(doc, "support@example.com").section_path == ("Contact",)


def test_docx_headings_paragraphs_table(tmp_path: Path) -> None:
    doc = parse_file(ff.write_docx(tmp_path))
    assert_consistent(doc)
    assert doc.title == "Annual Report" and doc.metadata["format"] == "docx"
    assert block_with(doc, "second quarter").section_path == ("Sales", "Details")
    assert block_with(doc, "Online shop").kind == "list"
    assert texts(doc, "table_row") == ["Model: X200 | Units: 1200", "Model: Y300 | Units: 800"]
    assert block_with(doc, "明年计划").section_path == ("Outlook",)


def test_pdf_pages_headings_dehyphenation(tmp_path: Path) -> None:
    doc = parse_file(ff.write_pdf(tmp_path))
    assert_consistent(doc)
    assert doc.metadata == {"format": "pdf", "pages": 2}
    assert doc.title == "1 Introduction"
    assert block_with(doc, "1 Introduction").kind == "title"
    first = block_with(doc, "compact widget")
    assert first.page == 1 and first.section_path == ("1 Introduction",)
    assert "recycled aluminium. The Acme X200" in doc.text[first.start : first.end]  # wrapped lines joined
    assert "the information about repairs" in doc.text
    repairs = block_with(doc, "Repairs are free")
    assert repairs.page == 2 and repairs.section_path == ("2 Repairs",)


def test_pdf_paragraph_heuristics() -> None:
    page = "3\n2.1 Setup\nPlug in the cable and wait until the light turns green. The widget\nthen starts.\n" \
           "• first step\n• second step\n- 3 -"
    paragraphs = page_paragraphs(page)
    assert paragraphs[0] == ("title", "2.1 Setup", 1)
    assert paragraphs[1][0] == "text" and paragraphs[1][1].endswith("The widget then starts.")
    assert [p[1] for p in paragraphs if p[0] == "list"] == ["first step", "second step"]
    assert all("3" not in p[1] for p in paragraphs[2:])  # page numbers at top and bottom dropped
    assert join_lines(["well-known infor-", "mation here"]) == "well-known information here"
    assert join_lines(["Acme-", "Widget"]) == "Acme- Widget"  # capitalised continuation keeps the hyphen


# ---- tables and records ------------------------------------------------------------------------
def test_csv_question_answer(tmp_path: Path) -> None:
    doc = parse_file(ff.write_csv_qa(tmp_path))
    assert_consistent(doc)
    assert doc.title == "faq" and doc.metadata["format"] == "csv"
    assert [(p.question, p.answer) for p in doc.qa_pairs] == ff.QA_ROWS
    pair = doc.qa_pairs[0]
    assert doc.text[pair.start : pair.end] == ("Question: What is the warranty period of the X200? | "
                                               "Answer: Two years from the date of purchase. | Category: support")


def test_csv_gbk_question_answer(tmp_path: Path) -> None:
    doc = parse_file(ff.write_csv_qa(tmp_path, "faq_gbk.csv", encoding="gb18030"))
    assert doc.metadata["encoding"] == "gb18030"
    assert doc.qa_pairs[2].question == "保修期是多久？"


def test_csv_plain_table(tmp_path: Path) -> None:
    doc = parse_file(ff.write_csv_table(tmp_path))
    assert_consistent(doc)
    assert doc.qa_pairs == []
    assert texts(doc, "table_row") == ["model: X200 | price: 100 | colour: red, blue",
                                       "model: Y300 | price: 250 | colour: black"]
    assert doc.text == "\n".join(texts(doc))


def test_tsv(tmp_path: Path) -> None:
    doc = parse_file(ff.write_csv_table(tmp_path, "prices.tsv", "\t"))
    assert doc.metadata["format"] == "tsv"
    assert texts(doc)[0] == "model: X200 | price: 100 | colour: red, blue"


def test_xlsx_every_sheet(tmp_path: Path) -> None:
    doc = parse_file(ff.write_xlsx(tmp_path))
    assert_consistent(doc)
    assert doc.metadata["sheets"] == ["FAQ", "Prices"]
    assert [(p.question, p.answer) for p in doc.qa_pairs] == ff.QA_ROWS
    assert all(p.section_path == ("FAQ",) for p in doc.qa_pairs)
    prices = [b for b in doc.blocks if b.section_path == ("Prices",)]
    assert [doc.text[b.start : b.end] for b in prices] == ["Model: X200 | Price: 100 | In stock: true",
                                                         "Model: Y300 | Price: 249.5 | In stock: false"]


def test_json_question_answer(tmp_path: Path) -> None:
    doc = parse_file(ff.write_json_qa(tmp_path))
    assert_consistent(doc)
    assert [(p.question, p.answer) for p in doc.qa_pairs] == ff.QA_ROWS


def test_json_records_without_qa(tmp_path: Path) -> None:
    doc = parse_file(ff.write_json_records(tmp_path))
    assert_consistent(doc)
    assert doc.qa_pairs == [] and doc.metadata["records"] == 2
    assert texts(doc) == ["Packaging\nThe X200 ships in a recycled box.\nid: 1\ntags: eco, box",
                          "Colours\nThe X200 comes in red and blue.\nid: 2\nmeta.author: Ann\nmeta.year: 2024"]
    assert [b.section_path for b in doc.blocks] == [("Packaging",), ("Colours",)]


def test_jsonl_question_answer_and_records(tmp_path: Path) -> None:
    qa = parse_file(ff.write_jsonl_qa(tmp_path))
    assert [(p.question, p.answer) for p in qa.qa_pairs] == ff.QA_ROWS
    notes = parse_file(ff.write_jsonl_records(tmp_path))
    assert notes.qa_pairs == [] and texts(notes) == ["First note about batteries.\nlevel: 1",
                                                     "Second note about screens.\nlevel: 2"]


def test_title_content_is_not_qa(tmp_path: Path) -> None:
    path = tmp_path / "pages.csv"
    path.write_text("title,content\nWarranty,Two years\n", encoding="utf-8")
    doc = parse_file(path)
    assert doc.qa_pairs == [] and texts(doc) == ["title: Warranty | content: Two years"]


# ---- cleaning ----------------------------------------------------------------------------------
def test_clean_text() -> None:
    assert clean_text("  a\x00b \t\u00a0 c\n\nd  ") == "ab c d"
    assert clean_text("保修期\n是两年 。 Acme  X200") == "保修期是两年。 Acme X200"
    assert clean_text("def f():\n    return 1\n\n\n", keep_lines=True) == "def f():\n    return 1"


def test_control_characters_removed(tmp_path: Path) -> None:
    path = tmp_path / "ctrl.txt"
    path.write_bytes("Line with\x00 nul\x07 and   spaces.\r\n\r\nSecond\u200b paragraph here.".encode())
    doc = parse_file(path)
    assert texts(doc) == ["Line with nul and spaces.", "Second paragraph here."]


# ---- errors ------------------------------------------------------------------------------------
def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFile, match=r"\.xyz"):
        parse_file(ff.write_unsupported(tmp_path))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="empty file"):
        parse_file(ff.write_empty(tmp_path))


def test_whitespace_only_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.md"
    path.write_text(" \n\n\t\n", encoding="utf-8")
    with pytest.raises(ParseError, match="empty file"):
        parse_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="file not found"):
        parse_file(tmp_path / "nope.txt")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ff.write_unreadable(tmp_path)
    if os.geteuid() == 0:  # root reads anything: simulate the OS refusal instead
        real_open = os.open

        def refuse(name, flags, *args):
            if Path(name) == path:
                raise PermissionError(13, "Permission denied", str(name))
            return real_open(name, flags, *args)

        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ParseError, match="permission denied"):
        parse_file(path)


def test_corrupt_pdf(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="corrupt PDF"):
        parse_file(ff.write_corrupt_pdf(tmp_path))


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no extractable text"):
        parse_file(ff.write_blank_pdf(tmp_path))


def test_encrypted_pdf(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="encrypted: the PDF needs a password"):
        parse_file(ff.write_encrypted_pdf(tmp_path))


@pytest.mark.parametrize("name, reason", [("broken.docx", "corrupt DOCX"), ("broken.xlsx", "corrupt XLSX")])
def test_corrupt_office_files(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(ParseError, match=reason):
        parse_file(path)


@pytest.mark.parametrize("name, content, reason", [
    ("bad.json", '{"a": 1,', "invalid JSON at line 1"),
    ("bad.jsonl", '{"a": 1}\n{oops}\n', "invalid JSON Lines at line 2"),
])
def test_invalid_json(tmp_path: Path, name: str, content: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ParseError, match=reason):
        parse_file(path)


def test_parser_crash_becomes_a_short_parse_error_and_the_detail_is_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import ingest.parse as parse_module

    def crash(fmt: str, *options: object):
        def parser(*args: object) -> ParsedDocument:
            raise RuntimeError(f"boom inside a library on {args[0]!r:.40} <_io.BytesIO object at 0x7f00>")
        return parser

    monkeypatch.setattr(parse_module, "_binary_parser", crash)
    with caplog.at_level("ERROR", logger="ingest.parse"), pytest.raises(ParseError) as info:
        parse_file(ff.write_pdf(tmp_path))
    assert info.value.message == "cannot parse this PDF file (RuntimeError)"  # no repr, no library text
    assert "boom inside a library" in caplog.text and "<_io.BytesIO" in caplog.text


# ---- offline -----------------------------------------------------------------------------------
def test_parsing_never_touches_the_network(tmp_path: Path) -> None:
    """In a fresh interpreter (nothing loaded yet) with every socket connect and DNS lookup
    failing loudly, every format parses: no telemetry ping, no spaCy model download."""
    script = textwrap.dedent(f"""
        import socket, sys
        calls = []
        def refuse(*args, **kwargs):
            calls.append(args)
            raise OSError("network disabled in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.getaddrinfo = refuse
        socket.create_connection = refuse
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.unit import fixtures_files as ff
        from ingest.parse import parse_file
        for path in ff.write_all(Path({str(tmp_path)!r})).values():
            parse_file(path)
        print("network calls:", len(calls))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "network calls: 0" in result.stdout
    assert "Downloading" not in result.stderr
