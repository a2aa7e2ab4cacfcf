"""Bounded parsing: file size, decompression bombs, one read per file, the linear large-text parser,
symbolic links out of the folder, mostly-UTF-8 files, and short reasons for clients."""

from __future__ import annotations

import io
import logging
import os
import struct
import time
import zipfile
from pathlib import Path

import pytest

from ingest.chunkers import make_chunker
from ingest.formats.encoding import decode_text
from ingest.limits import MIB, ParseLimits, check_zip
from ingest.parse import parse_bytes, parse_file
from ingest.runner import scan_folder
from ingest.service import build_ingestor
from rag.errors import ParseError
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder

GOOD = "The Zephyr kettle warranty lasts three years from the date of purchase. " * 20


def _services(data_dir: Path, **settings):
    return build_services(Settings(data_dir=data_dir, **settings), embedder=HashEmbedder(dim=64))


def _office_zip(kind: str, big_member: str, big_mb: int, *, repeated: bytes = b"<r>aaaa</r>") -> bytes:
    """A DOCX/XLSX-shaped zip with one huge, highly compressible member streamed from a generator."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        block = repeated * (MIB // len(repeated))
        with archive.open(big_member, "w", force_zip64=True) as handle:
            for _ in range(big_mb):
                handle.write(block)
    return buffer.getvalue()


# ---- decompression bombs -----------------------------------------------------------------------
def test_zip_bombs_are_skipped_quickly_with_the_limit_named_and_the_rest_is_indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "sheet.xlsx").write_bytes(_office_zip("xlsx", "xl/worksheets/sheet1.xml", 40))
    (docs / "comments.docx").write_bytes(_office_zip("docx", "word/comments.xml", 40))
    (docs / "small_bomb.docx").write_bytes(_office_zip("docx", "word/document.xml", 8))  # under the size limit
    (docs / "good.txt").write_text(GOOD, encoding="utf-8")
    assert (docs / "sheet.xlsx").stat().st_size < 200_000
    services = _services(tmp_path / "data", max_unzipped_mb=16)
    started = time.perf_counter()
    report = build_ingestor(services, "kb").ingest_folder(docs)
    assert time.perf_counter() - started < 15
    skipped = {f.source: f.reason for f in report.skipped}
    assert set(skipped) == {"sheet.xlsx", "comments.docx", "small_bomb.docx"}
    assert "RAG_MAX_UNZIPPED_MB=16" in skipped["sheet.xlsx"] and "40.0 MB" in skipped["sheet.xlsx"]
    assert "RAG_MAX_UNZIPPED_MB=16" in skipped["comments.docx"]
    assert "RAG_MAX_ZIP_RATIO=100" in skipped["small_bomb.docx"]
    assert [f.source for f in report.files if f.status == "indexed"] == ["good.txt"]


def test_total_unzipped_size_is_bounded():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # ratio 1: only the total is wrong
        for i in range(5):
            archive.writestr(f"part{i}.xml", os.urandom(MIB))
    with pytest.raises(ParseError, match=r"more than 4\.0 MB in all \(RAG_MAX_UNZIPPED_MB=4\)"):
        check_zip(buffer.getvalue(), ParseLimits(max_unzipped_mb=4))
    check_zip(buffer.getvalue(), ParseLimits(max_unzipped_mb=6))


def _lie_about_size(data: bytes, member: str, declared: int) -> bytes:
    """Patch the central directory (and local header) so `member` declares `declared` bytes."""
    data = bytearray(data)
    name = member.encode()
    central = data.find(b"PK\x01\x02" + b"\x00" * 0)
    while central >= 0:
        name_len = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + name_len]) == name:
            struct.pack_into("<I", data, central + 24, declared)
            local = struct.unpack_from("<I", data, central + 42)[0]
            struct.pack_into("<I", data, local + 22, declared)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


def test_a_member_that_lies_about_its_size_is_not_inflated_past_it():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", os.urandom(64) * (3 * MIB // 64))  # 3 MB, ratio about 60:1
    lying = _lie_about_size(buffer.getvalue(), "word/document.xml", 1000)
    assert zipfile.ZipFile(io.BytesIO(lying)).getinfo("word/document.xml").file_size == 1000
    with pytest.raises(ParseError, match="corrupt DOCX: zip member 'word/document.xml'"):
        check_zip(lying, ParseLimits(max_unzipped_mb=2), "DOCX")
    with pytest.raises(ParseError, match="corrupt DOCX"):
        parse_bytes(lying, ".docx", "lying.docx", ParseLimits(max_unzipped_mb=2))


def test_real_office_files_pass_the_zip_checks(tmp_path):
    from tests.unit import fixtures_files as ff

    for path in (ff.write_docx(tmp_path), ff.write_xlsx(tmp_path)):
        check_zip(path.read_bytes(), ParseLimits())
        assert parse_file(path).text


# ---- file size, one read -----------------------------------------------------------------------
def test_files_over_max_file_mb_are_skipped_with_the_limit_named(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text("word " * 300_000, encoding="utf-8")  # 1.4 MB
    (docs / "good.txt").write_text(GOOD, encoding="utf-8")
    report = build_ingestor(_services(tmp_path / "data", max_file_mb=1), "kb").ingest_folder(docs)
    assert {f.source: f.reason for f in report.skipped} == {"big.txt": "file too large: 1.4 MB, over RAG_MAX_FILE_MB=1"}
    assert report.count("indexed") == 1
    with pytest.raises(ParseError, match="RAG_MAX_FILE_MB=1"):
        parse_file(docs / "big.txt", ParseLimits(max_file_mb=1))


def test_each_file_is_read_once(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(GOOD, encoding="utf-8")
    import ingest.runner

    reads = []
    original = ingest.runner.read_file

    def counting(path, limits):
        reads.append(path.name)
        return original(path, limits)

    monkeypatch.setattr(ingest.runner, "read_file", counting)
    report = build_ingestor(_services(tmp_path / "data"), "kb").ingest_folder(docs)
    assert report.count("indexed") == 1
    assert reads.count("a.txt") == 1


# ---- large plain text --------------------------------------------------------------------------
def _big_text(paragraphs: int) -> str:
    parts = []
    for i in range(paragraphs):
        if i % 25 == 0:
            parts.append(f"Chapter {i // 25}")
        parts.append(f"Paragraph {i} says the kettle\r\nwarranty   covers part {i}.\x00 It is\tfine. " * 3)
    return "\n\n \n".join(parts)


def test_large_text_takes_the_linear_path_with_exact_offsets(monkeypatch):
    from ingest.formats import elements

    monkeypatch.setattr(elements, "parse_text", lambda *a: pytest.fail("unstructured used on a large file"))
    data = _big_text(400).encode()
    doc = parse_bytes(data, ".txt", "book.txt", ParseLimits(large_text_mb=0.05))
    assert doc.metadata["parser"] == "linear" and doc.title == "Chapter 0"
    assert "\r" not in doc.text and "\x00" not in doc.text
    titles = [b for b in doc.blocks if b.kind == "title"]
    assert [doc.text[b.start:b.end] for b in titles[:2]] == ["Chapter 0", "Chapter 1"]
    texts = [b for b in doc.blocks if b.kind == "text"]
    assert len(texts) == 400 and texts[30].section_path == ("Chapter 1",)
    for block in doc.blocks:
        piece = doc.text[block.start:block.end]
        assert piece == piece.strip() and piece
    spans = make_chunker("recursive", size=300, overlap=50).split(doc)
    assert spans and all(span.text == doc.text[span.start:span.end] for span in spans)
    assert any("part 399" in span.text for span in spans)


def test_large_markdown_keeps_headings_code_and_lists():
    md = ("# Manual\n\nIntro text.\n\n## Setup\n\n- step one\n- step two\n\n```python\nx = 1\n\n\ny = 2\n```\n\n"
          "After the code.\n" + "\n".join(f"\n### Part {i}\n\nBody of part {i}." for i in range(2000)))
    doc = parse_bytes(md.encode(), ".md", "manual.md", ParseLimits(large_text_mb=0.01))
    assert doc.metadata["parser"] == "linear" and doc.title == "Manual"
    got = [(b.kind, doc.text[b.start:b.end], b.section_path) for b in doc.blocks[:7]]
    assert got == [("title", "Manual", ("Manual",)), ("text", "Intro text.", ("Manual",)),
                   ("title", "Setup", ("Manual", "Setup")), ("list", "- step one\n- step two", ("Manual", "Setup")),
                   ("code", "```python\nx = 1\n\n\ny = 2\n```", ("Manual", "Setup")),
                   ("text", "After the code.", ("Manual", "Setup")),
                   ("title", "Part 0", ("Manual", "Setup", "Part 0"))]
    assert doc.blocks[-1].section_path == ("Manual", "Setup", "Part 1999")


def test_large_text_parses_fast():
    data = _big_text(12_000).encode()  # about 3 MB: unstructured took ~13 s per MB
    assert len(data) > 2.5 * MIB
    started = time.perf_counter()
    doc = parse_bytes(data, ".txt", "big.txt")
    assert time.perf_counter() - started < 5
    assert len([b for b in doc.blocks if b.kind == "text"]) == 12_000


# ---- symbolic links ----------------------------------------------------------------------------
def _linked_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "passwd.txt").write_text("root:x:0:0:secret outside line " * 10, encoding="utf-8")
    (outside / "sub" / "more.txt").write_text("another secret outside file " * 10, encoding="utf-8")
    docs = tmp_path / "docs"
    (docs / "inner").mkdir(parents=True)
    (docs / "inner" / "real.txt").write_text(GOOD, encoding="utf-8")
    (docs / "passwd.txt").symlink_to(outside / "passwd.txt")
    (docs / "outdir").symlink_to(outside / "sub", target_is_directory=True)
    (docs / "alias.txt").symlink_to(docs / "inner" / "real.txt")  # inside: fine
    (docs / "inner" / "loop").symlink_to(docs, target_is_directory=True)  # a cycle
    (docs / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    return docs


def test_links_out_of_the_folder_are_skipped_and_reported(tmp_path):
    docs = _linked_folder(tmp_path)
    scan = scan_folder(docs)
    assert sorted(p.relative_to(docs).as_posix() for p in scan.files) == ["alias.txt", "inner/real.txt"]
    report = build_ingestor(_services(tmp_path / "data"), "kb").ingest_folder(docs)
    skipped = {f.source: f.reason for f in report.skipped}
    assert skipped["passwd.txt"] == "symbolic link to a file outside the folder (use --follow-links to index it)"
    assert skipped["outdir"] == "symbolic link to a folder outside the folder (use --follow-links to index it)"
    assert "cycle" in skipped["inner/loop"] and "broken" in skipped["dangling.txt"]
    assert sorted(f.source for f in report.files if f.status == "indexed") == ["alias.txt", "inner/real.txt"]


def test_follow_links_indexes_them_without_looping(tmp_path):
    docs = _linked_folder(tmp_path)
    scan = scan_folder(docs, follow_links=True)
    assert sorted(p.relative_to(docs).as_posix() for p in scan.files) == [
        "alias.txt", "inner/real.txt", "outdir/more.txt", "passwd.txt"]
    assert any("cycle" in reason for _, reason in scan.skipped)


# ---- encodings ---------------------------------------------------------------------------------
def test_mostly_utf8_with_a_few_bad_bytes_is_utf8_with_replacement_and_says_so(tmp_path):
    text = "Größe und Gewicht des Wasserkochers: 1,7 Liter, Edelstahl, café. " * 30
    data = text.encode() + b"\xff\xfe\x81" + " Ende der Anleitung.".encode()
    decoded = decode_text(data)
    assert decoded.encoding == "utf-8" and decoded.replaced == 3
    assert decoded.text.startswith("Größe und Gewicht") and decoded.text.count("\ufffd") == 3
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.txt").write_bytes(data)
    report = build_ingestor(_services(tmp_path / "data"), "kb").ingest_folder(docs)
    [result] = report.files
    assert result.status == "indexed" and result.note == "decoded as UTF-8, 3 invalid byte(s) replaced"
    assert report.as_dict()["files"][0]["note"] == result.note


def test_other_encodings_are_still_detected():
    assert decode_text("保修期是自购买之日起两年。".encode("gbk") * 5)[1] == "gb18030"
    assert decode_text(("Größe " * 50).encode("utf-16-le"))[1] == "utf-16-le"
    latin = ("Déjà vu: the café serves crème brûlée à la carte. " * 20).encode("cp1252")
    assert decode_text(latin).replaced == 0 and decode_text(latin).encoding != "utf-8"  # no UTF-8 evidence


# ---- short reasons for clients -----------------------------------------------------------------
def test_office_parse_errors_have_no_object_reprs():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not an office document")
    for suffix, reason in ((".docx", "corrupt DOCX: not a readable Word document"),
                           (".xlsx", "corrupt XLSX: not a readable Excel workbook")):
        with pytest.raises(ParseError) as info:
            parse_bytes(buffer.getvalue(), suffix, "x" + suffix)
        assert info.value.message == reason


def test_a_crashed_upload_job_gives_a_short_reason_and_logs_the_detail(tmp_path, monkeypatch, caplog):
    from fastapi.testclient import TestClient

    from api.jobs import JobManager
    from tests.unit.api_helpers import ADMIN, make_app

    def crash(self, job, kept):
        raise RuntimeError("boom at <_io.BytesIO object at 0x7f3a> in /srv/secret/path")

    monkeypatch.setattr(JobManager, "_ingest", crash)
    app, _ = make_app(tmp_path)
    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="api.jobs"):
        client.post("/v1/kbs", json={"name": "zephyr"}, headers=ADMIN)
        r = client.post("/v1/kbs/zephyr/documents", files=[("files", ("a.txt", GOOD.encode()))], headers=ADMIN)
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 30
        while (job := client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json())["status"] not in ("failed", "succeeded"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert job["status"] == "failed"
    assert job["error"] == "internal error while indexing; the server log has the details"
    assert "boom at <_io.BytesIO" in caplog.text


def test_api_uploads_over_max_file_mb_are_skipped_with_a_reason(tmp_path):
    from fastapi.testclient import TestClient

    from tests.unit.api_helpers import ADMIN, make_app

    app, _ = make_app(tmp_path, max_upload_mb=5, max_file_mb=1)
    with TestClient(app) as client:
        client.post("/v1/kbs", json={"name": "zephyr"}, headers=ADMIN)
        files = [("files", ("big.txt", b"word " * 300_000)), ("files", ("good.txt", GOOD.encode()))]
        job_id = client.post("/v1/kbs/zephyr/documents", files=files, headers=ADMIN).json()["job_id"]
        deadline = time.monotonic() + 30
        while (job := client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json())["status"] not in (
                "failed", "succeeded", "partial"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert job["status"] == "partial"
    assert job["errors"] == [{"file": "big.txt", "reason": "file too large: 1.4 MB, over RAG_MAX_FILE_MB=1"}]


def test_the_ascii_fast_path_of_clean_text_matches_the_general_one():
    import random
    import unicodedata

    from ingest.formats import builder

    def general(text: str) -> str:
        text = builder._CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
        text = builder._ANY_WS_RE.sub(" ", unicodedata.normalize("NFC", text)).strip()
        return builder._CJK_GAP_RE.sub("", text)

    rng = random.Random(3)
    alphabet = [chr(i) for i in range(128)]
    for _ in range(5000):
        text = "".join(rng.choice(alphabet if rng.random() < 0.3 else "ab \t\n\r") for _ in range(rng.randint(0, 30)))
        assert builder.clean_text(text) == general(text), repr(text)
