"""OCR plumbing with a scripted engine: reading order, image preparation, image documents (corrupt,
bomb, multi-page), which PDF pages are OCR'd, and the ingest path (chunk fields, report, skips,
incremental rules). The real engine's accuracy is checked in tests/integration/test_ocr_real.py."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from PIL import Image

from ingest.formats.images import parse_image
from ingest.formats.ocr import OcrOptions, chunk_ocr
from ingest.formats.ocr_image import fit_image
from ingest.formats.ocr_layout import OcrLine, column_split, layout_text
from ingest.formats.pdf import parse_pdf
from ingest.parse import parse_file
from ingest.service import build_ingestor
from rag.errors import ParseError
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit import ocr_fixtures as of


def box(text: str, x0: float, y0: float, x1: float, y1: float, score: float = 0.9) -> OcrLine:
    return OcrLine(text, score, x0, y0, x1, y1)


def options(engine=None, **kw) -> OcrOptions:
    return OcrOptions(engine=engine or of.ScriptedEngine(), **kw)


# ---- layout ------------------------------------------------------------------------------------
def test_layout_joins_split_rows_left_to_right_and_breaks_paragraphs_at_gaps() -> None:
    boxes = [box("world.", 400, 100, 600, 130), box("Hello", 100, 102, 350, 131),  # one row, two boxes
             box("Second line", 100, 145, 700, 175),
             box("New paragraph", 100, 240, 700, 270)]  # a gap of about 2 line heights
    assert layout_text(boxes, 1000) == "Hello world.\nSecond line\n\nNew paragraph"


def test_two_columns_are_read_left_column_first_under_a_full_width_title() -> None:
    title = box("A title over both columns", 100, 50, 1100, 90)
    left = [box(f"left {i}", 100, 120 + 45 * i, 560, 150 + 45 * i) for i in range(4)]
    right = [box(f"right {i}", 640, 120 + 45 * i, 1100, 150 + 45 * i) for i in range(4)]
    interleaved = [b for pair in zip(right, left) for b in pair]  # detection order mixes the columns
    text = layout_text([*interleaved, title], 1200)
    assert text == ("A title over both columns\n\n" + "\n".join(f"left {i}" for i in range(4)) + "\n\n"
                    + "\n".join(f"right {i}" for i in range(4)))
    assert 560 <= column_split([*left, *right], 1200) <= 640


def test_single_column_and_short_rows_are_not_split_into_columns() -> None:
    lines = [box(f"line {i} of running text across the page", 100, 100 + 45 * i, 1100, 130 + 45 * i)
             for i in range(8)]
    assert column_split(lines, 1200) is None
    # a form with a label and a value per row: only two rows, not columns
    form = [box("Name:", 100, 100, 300, 130), box("Ada", 700, 100, 900, 130),
            box("Date:", 100, 150, 300, 180), box("2024", 700, 150, 900, 180)]
    assert column_split(form, 1200) is None
    assert layout_text(form, 1200) == "Name: Ada\nDate: 2024"


def test_chunk_ocr_weights_confidence_by_overlap() -> None:
    meta = {"ocr_spans": [[0, 100, 0.9], [102, 202, 0.5]]}
    assert chunk_ocr(meta, 0, 100) == (True, 0.9)
    assert chunk_ocr(meta, 50, 152) == (True, 0.7)
    assert chunk_ocr(meta, 300, 400) == (False, None)
    assert chunk_ocr({}, 0, 10) == (False, None)


# ---- image preparation ---------------------------------------------------------------------------
def test_fit_image_downscales_large_and_upscales_small_low_dpi_pages() -> None:
    assert fit_image(Image.new("L", (6000, 3000), 255), 4000).size == (4000, 2000)
    assert fit_image(Image.new("RGB", (1000, 800), "white"), 4000).size == (2000, 1600)
    sharp = Image.new("RGB", (1000, 800), "white")
    sharp.info["dpi"] = (300, 300)
    assert fit_image(sharp, 4000).size == (1000, 800)
    assert fit_image(Image.new("RGB", (1900, 1000)), 3000).size == (3000, 1579)  # capped by max_side


def test_fit_image_puts_transparency_on_white_and_stretches_16_bit() -> None:
    clear = fit_image(Image.new("RGBA", (2400, 100), (0, 0, 0, 0)), 4000)
    assert clear.mode == "RGB" and clear.getpixel((5, 5)) == (255, 255, 255)
    deep = Image.new("I;16", (2400, 100), 0)
    deep.paste(4000, (0, 0, 1200, 100))
    fitted = fit_image(deep, 4000)
    assert fitted.getpixel((10, 10)) == (255, 255, 255) and fitted.getpixel((2000, 10)) == (0, 0, 0)


# ---- images as documents ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, fmt", [("scan.png", "png"), ("photo.jpg", "jpeg"), ("photo.jpeg", "jpeg"),
                                       ("scan.bmp", "bmp"), ("scan.webp", "webp"), ("scan.tif", "tiff")])
def test_image_files_are_ocred(tmp_path: Path, name: str, fmt: str) -> None:
    engine = of.ScriptedEngine(of.paragraph_lines(["Warranty", "The pump warranty lasts two years."]))
    doc = parse_file(of.write_image(tmp_path, name), ocr=options(engine))
    assert doc.metadata["format"] == fmt
    assert "The pump warranty lasts two years." in doc.text
    assert doc.metadata["ocr_pages"] == [1] and doc.metadata["ocr_seconds"] >= 0
    assert all(b.page is None for b in doc.blocks)  # one image: no page numbers
    assert [tuple(s[:2]) for s in doc.metadata["ocr_spans"]] == [(b.start, b.end) for b in doc.blocks]
    assert len(engine.calls) == 1


def test_multipage_tiff_keeps_page_numbers_and_reports_a_blank_page(tmp_path: Path) -> None:
    doc = parse_file(of.write_multipage_tiff(tmp_path, blanks=(2,)), ocr=options())
    assert doc.metadata["pages"] == 3 and doc.metadata["ocr_pages"] == [1, 3]
    assert sorted({b.page for b in doc.blocks}) == [1, 3]
    assert doc.metadata["ocr_skipped"] == ["page 2: blank page"]


def test_images_need_ocr(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="need OCR, which is off"):
        parse_file(of.write_image(tmp_path, "scan.png"), ocr=OcrOptions(enabled=False))


def test_corrupt_and_blank_images_are_refused_with_a_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(ParseError, match="corrupt"):
        parse_file(broken, ocr=options())
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(of.jpeg_bytes(of.scan_image())[:600])
    with pytest.raises(ParseError, match="corrupt"):
        parse_file(truncated, ocr=options())
    with pytest.raises(ParseError, match="no text found by OCR"):
        parse_file(of.write_image(tmp_path, "blank.png", of.scan_image(blank=True)), ocr=options())


@pytest.mark.parametrize("size, limit, message", [((30_000, 30_000), 89_478_485, "too large"),
                                                  ((9_000, 9_000), 50_000_000, "9000 x 9000 pixels")])
def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path, size, limit, message) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(of.png_header_only(*size))
    engine = of.ScriptedEngine()
    started = time.perf_counter()
    with pytest.raises(ParseError, match=message):
        parse_image(path.read_bytes(), "png", "bomb", ocr=options(engine, max_pixels=limit))
    assert time.perf_counter() - started < 2 and engine.calls == []  # nothing was decoded


# ---- PDF pages ---------------------------------------------------------------------------------------
def test_image_only_pdf_is_ocred_page_by_page(tmp_path: Path) -> None:
    engine = of.ScriptedEngine()
    doc = parse_file(of.write_image_pdf(tmp_path, pages=2), ocr=options(engine))
    assert doc.metadata["pages"] == 2 and doc.metadata["ocr_pages"] == [1, 2]
    assert sorted({b.page for b in doc.blocks}) == [1, 2]
    assert len(engine.calls) == 2
    # a 150-dpi scan is rendered at its own resolution (not resampled to 300 dpi), then upscaled 2x
    width, height = engine.calls[0]
    assert abs(width - 2 * 1240) < 4 and abs(height - 2 * 1754) < 4


def test_vector_page_without_text_renders_at_the_requested_dpi(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()  # A4, text drawn as shapes only: no text layer, no image
    pdf.add_page()
    for row in range(10):
        pdf.rect(20, 20 + 8 * row, 150, 4, style="F")
    path = tmp_path / "outlines.pdf"
    pdf.output(str(path))
    engine = of.ScriptedEngine()
    parse_file(path, ocr=options(engine, dpi=300))
    width, height = engine.calls[0]
    assert abs(width - 210 / 25.4 * 300) < 3 and abs(height - 297 / 25.4 * 300) < 3
    parse_file(path, ocr=options(engine, dpi=150))  # under 300 dpi: rendered at 150, then upscaled 2x
    width, height = engine.calls[1]
    assert abs(width - 210 / 25.4 * 300) < 4 and abs(height - 297 / 25.4 * 300) < 4


def test_fix_digits_repairs_o_between_digits_only() -> None:
    from ingest.formats.ocr import fix_digits

    assert fix_digits("Acme X2o0, model 1O5, room 3o") == "Acme X200, model 105, room 3o"
    assert fix_digits("two orders") == "two orders"


def test_text_pages_are_never_ocred_and_scanned_pages_are(tmp_path: Path) -> None:
    for caption in (False, True):
        engine = of.ScriptedEngine()
        doc = parse_file(of.write_mixed_pdf(tmp_path, f"mixed-{caption}.pdf", caption=caption), ocr=options(engine))
        assert len(engine.calls) == 1, "only the scanned page is OCR'd"
        assert doc.metadata["ocr_pages"] == [2]
        text_blocks = [b for b in doc.blocks if b.page == 1]
        assert text_blocks and "real text layer" in doc.text[text_blocks[0].start : text_blocks[0].end]
        spans = doc.metadata["ocr_spans"]
        assert all(b.page == 2 for b in doc.blocks if [b.start, b.end] in [s[:2] for s in spans])
        assert "Scanned by ACME" not in doc.text  # the scan's OCR replaces the stamped text


def test_pages_render_no_larger_than_max_side(tmp_path: Path) -> None:
    engine = of.ScriptedEngine()
    parse_pdf(of.write_image_pdf(tmp_path).read_bytes(), "pdf", "scan", ocr=options(engine, dpi=600, max_side=2000))
    assert max(engine.calls[0]) <= 2000


def test_scanned_pdf_with_ocr_off_says_so(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="RAG_OCR=off"):
        parse_file(of.write_image_pdf(tmp_path), ocr=OcrOptions(enabled=False))
    doc = parse_file(of.write_mixed_pdf(tmp_path), ocr=OcrOptions(enabled=False))
    assert {b.page for b in doc.blocks} == {1} and "ocr_pages" not in doc.metadata


def test_scanned_pdf_page_without_text_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "blank-scan.pdf"
    of.scan_image(blank=True).save(path, "PDF", resolution=150)
    with pytest.raises(ParseError, match="OCR found none"):
        parse_file(path, ocr=options())


# ---- ingest ------------------------------------------------------------------------------------------
def _ingestor(tmp_path: Path, engine, **settings):
    services = build_services(Settings(data_dir=tmp_path / "data", vector_backend="local", **settings),
                              embedder=HashEmbedder(dim=64))
    ingestor = build_ingestor(services, "scans")
    ingestor.ocr = dataclasses.replace(ingestor.ocr, engine=engine)
    return services, ingestor


def test_folder_of_scans_is_indexed_with_ocr_fields_and_bad_images_skipped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    of.write_image(docs, "notice.png")
    of.write_multipage_tiff(docs, "contract.tiff", blanks=(2,))
    of.write_image_pdf(docs, "scan.pdf")
    (docs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (docs / "bomb.png").write_bytes(of.png_header_only(30_000, 30_000))
    (docs / "notes.txt").write_text("Plain notes about the pump. " * 10, encoding="utf-8")
    engine = of.ScriptedEngine()
    services, ingestor = _ingestor(tmp_path, engine)
    report = ingestor.ingest_folder(docs)
    status = {f.source: (f.status, f.reason) for f in report.files}
    assert {s for s, (st, _) in status.items() if st == "indexed"} == {"notice.png", "contract.tiff", "scan.pdf",
                                                                       "notes.txt"}
    assert "corrupt" in status["broken.jpg"][1] and "too large" in status["bomb.png"][1]
    assert status["contract.tiff"][1] == "page 2: blank page"  # indexed, with the blank page noted
    assert report.ocr_seconds > 0 and report.as_dict()["ocr_seconds"] >= 0
    kb = services.kbs.open("scans")
    chunks = kb.get_chunks(sorted(kb.store.ids(kb.collection))).values()
    by_source = {c.source: c for c in chunks}
    assert by_source["notice.png"].ocr and by_source["notice.png"].ocr_confidence == 0.9
    assert by_source["scan.pdf"].page == 1 and by_source["scan.pdf"].ocr
    assert not by_source["notes.txt"].ocr and by_source["notes.txt"].ocr_confidence is None
    assert by_source["notice.png"].payload()["ocr"] is True

    calls = len(engine.calls)
    again = ingestor.ingest_folder(docs)
    assert again.count("unchanged") == 4 and len(engine.calls) == calls, "unchanged scans are not OCR'd again"


def test_turning_ocr_off_and_on_reindexes_only_pdfs_and_images(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    of.write_mixed_pdf(docs, "mixed.pdf")
    (docs / "notes.txt").write_text("Plain notes about the pump. " * 10, encoding="utf-8")
    scanned = of.paragraph_lines(["The scanned page says the pump must be drained before winter."] * 6)
    services, ingestor = _ingestor(tmp_path, of.ScriptedEngine(scanned), chunk_size=200, chunk_overlap=20)
    ingestor.ingest_folder(docs)
    pages_on = {c.page for c in _chunks(services, "mixed.pdf")}
    assert pages_on == {1, 2}

    ingestor.ocr = dataclasses.replace(ingestor.ocr, enabled=False)
    off = {f.source: f.status for f in ingestor.ingest_folder(docs).files}
    assert off == {"mixed.pdf": "updated", "notes.txt": "unchanged"}
    assert {c.page for c in _chunks(services, "mixed.pdf")} == {1}

    ingestor.ocr = dataclasses.replace(ingestor.ocr, enabled=True)
    on = {f.source: f.status for f in ingestor.ingest_folder(docs).files}
    assert on == {"mixed.pdf": "updated", "notes.txt": "unchanged"}
    assert {c.page for c in _chunks(services, "mixed.pdf")} == {1, 2}


def _chunks(services, source: str):
    kb = services.kbs.open("scans")
    return [c for c in kb.get_chunks(sorted(kb.store.ids(kb.collection))).values() if c.source == source]


def test_settings_and_page_progress(tmp_path: Path) -> None:
    pages: list[tuple[str, int, int]] = []
    services = build_services(Settings(data_dir=tmp_path / "data", vector_backend="local", ocr="off", ocr_dpi=150),
                              embedder=HashEmbedder(dim=64))
    ingestor = build_ingestor(services, "scans", page_progress=lambda *a: pages.append(a))
    assert not ingestor.ocr.enabled and ingestor.ocr.dpi == 150
    ingestor.ocr = dataclasses.replace(ingestor.ocr, enabled=True, engine=of.ScriptedEngine())
    docs = tmp_path / "docs"
    docs.mkdir()
    of.write_image_pdf(docs, "long-scan.pdf", pages=3)
    ingestor.ingest_folder(docs)
    assert pages == [("long-scan.pdf", 1, 3), ("long-scan.pdf", 2, 3), ("long-scan.pdf", 3, 3)]  # the file, not its stem


def test_engine_is_shared_by_threads_and_loads_only_when_a_page_needs_it(monkeypatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import ingest.formats.ocr as ocr_module

    monkeypatch.setattr(ocr_module, "_shared", None)
    with ThreadPoolExecutor(8) as pool:
        engines = list(pool.map(lambda _: ocr_module.shared_engine(), range(32)))
    assert len({id(e) for e in engines}) == 1
    assert engines[0]._ocr is None  # nothing loaded until the first page
    assert OcrOptions().get_engine() is engines[0]


def test_a_short_text_page_without_a_big_image_is_not_ocred(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=28)
    pdf.cell(0, 20, "Part II")  # a title page: a few characters of real text
    pdf.rect(20, 60, 150, 2, style="F")
    path = tmp_path / "title-page.pdf"
    pdf.output(str(path))
    engine = of.ScriptedEngine()
    doc = parse_file(path, ocr=options(engine))
    assert engine.calls == [] and doc.text == "Part II"
