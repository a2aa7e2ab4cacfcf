"""Bounded OCR (issue 31): thin images and thin PDF pages refused before any resize or render, the
render scale and the image the engine sees bounded on both sides, tall strips read in tiles, blank
pages not recognised, and a file's page and time budgets stopping its OCR while the rest of the
folder is indexed. A scripted engine, except where the bundled RapidOCR's own resizing is checked."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from ingest.formats import ocr as ocr_module
from ingest.formats.images import parse_image
from ingest.formats.ocr import OcrOptions, read_page
from ingest.formats.ocr_image import (DETECT_SIDE, MAX_TILES, MIN_SIDE, STRIP_ASPECT, fit_image, fit_scale,
                                      is_blank)
from ingest.formats.ocr_layout import OcrLine
from ingest.formats.pdf import parse_pdf
from ingest.service import build_ingestor
from rag.errors import ParseError
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit import ocr_fixtures as of
from tests.unit.cli_helpers import run


def options(engine, **kw) -> OcrOptions:
    return OcrOptions(engine=engine, **kw)


# ---- thin images and pages -------------------------------------------------------------------------
def test_thin_png_is_refused_before_any_resize() -> None:
    data = of.thin_png(4000, 2)
    assert len(data) < 100
    engine = of.ScriptedEngine()
    with pytest.raises(ParseError, match=r"too thin to hold text: 4000 x 2 pixels \(under 8 pixels across\)"):
        parse_image(data, "png", "thin", ocr=options(engine))
    assert engine.calls == []
    # 2x upscaling (no DPI, small) is counted: 1000 x 3 -> 2000 x 6 is still too thin
    with pytest.raises(ParseError, match="too thin"):
        fit_image(Image.new("L", (1000, 3), 255), 4000)


def test_short_side_is_padded_not_upscaled_so_the_engine_never_resizes_up() -> None:
    assert fit_image(Image.new("L", (4000, 10), 0), 4000).size == (4000, MIN_SIDE)
    assert fit_image(Image.new("L", (1000, 5), 0), 4000).size == (2000, MIN_SIDE)  # 2x, then padded
    assert fit_image(Image.new("L", (12, 12), 0), 4000).size == (MIN_SIDE, MIN_SIDE)
    padded = fit_image(Image.new("L", (4000, 10), 0), 4000)
    assert padded.getpixel((5, 5)) == (0, 0, 0) and padded.getpixel((5, 20)) == (255, 255, 255)


def test_bundled_engine_does_not_upscale_a_short_side() -> None:
    """RapidOCR as configured: no min_side upscaling (was 4000 x 2 -> 60,000 x 32), the detector
    only shrinks (det_limit_type "max"), letterboxing stays within a quarter of the width."""
    pytest.importorskip("rapidocr_onnxruntime")
    from ingest.formats.ocr import RapidOcrEngine

    ocr = RapidOcrEngine()._load()  # about 0.5 s
    assert ocr.preprocess(np.zeros((2, 4000, 3), np.uint8))[0].shape == (2, 4000, 3)
    boxed, _ = ocr.maybe_add_letterbox(np.zeros((MIN_SIDE, 4000, 3), np.uint8), {})
    assert boxed.shape[:2] == (1000, 4000)
    for shape in [(MIN_SIDE, 100), (1000, 4000), (4000, 1000), (300, 2000)]:
        resized = ocr.text_det.get_preprocess(max(shape)).resize(np.zeros((*shape, 3), np.uint8))
        assert resized is not None and all(new <= 32 * math.ceil(old / 32) for new, old in zip(resized.shape, shape))


def test_thin_mediabox_pdf_page_is_skipped_without_rendering(tmp_path: Path, monkeypatch) -> None:
    import pypdfium2 as pdfium

    scales: list[float] = []
    render = pdfium.PdfPage.render
    monkeypatch.setattr(pdfium.PdfPage, "render", lambda self, **kw: scales.append(kw["scale"]) or render(self, **kw))
    data = of.drawn_pdf([(14400, 1, "0 g 0 0 14400 1 re f"), (612, 792, of.bars_content(612, 792))])
    engine = of.ScriptedEngine()
    doc = parse_pdf(data, "pdf", "thin", ocr=options(engine))
    assert doc.metadata["ocr_pages"] == [2]
    assert doc.metadata["ocr_skipped"] == ["page 1: too thin to hold text: 14400 x 1 points, 4000 x 0 pixels at the "
                                           "OCR scale (under 8 pixels across)"]
    assert scales == [300 / 72]  # only page 2 was rendered
    assert len(engine.calls) == 1 and abs(engine.calls[0][0] - 2550) <= 1 and abs(engine.calls[0][1] - 3300) <= 1


@pytest.mark.parametrize("size", [(14400, 14400), (612, 14400), (14400, 612), (100, 14400), (3, 14400)])
def test_render_scale_bounds_both_sides_and_the_pixel_count(size) -> None:
    width, height = size
    scale = min(300 / 72, fit_scale(width, height, 4000))
    assert width * height * scale**2 <= 4000**2 * 1.0001
    assert width * scale <= 4000 * 1.0001
    if height <= STRIP_ASPECT * width:
        assert height * scale <= 4000 * 1.0001
    else:  # a strip: as wide as allowed, at most MAX_TILES tiles tall
        assert height * scale <= MAX_TILES * DETECT_SIDE * 1.0001


def test_huge_blank_pages_are_rendered_within_max_side_and_not_recognised(tmp_path: Path) -> None:
    white = of.WHITE_PAGE.format(w=14400, h=14400)
    data = of.drawn_pdf([(14400, 14400, white)] * 3 + [(14400, 14400, of.bars_content(14400, 14400))])
    engine = of.ScriptedEngine()
    started = time.perf_counter()
    doc = parse_pdf(data, "pdf", "big", ocr=options(engine))
    assert time.perf_counter() - started < 10
    assert engine.calls == [(4000, 4000)]  # the page with bars; the blank ones never reach the engine
    assert doc.metadata["ocr_pages"] == [4] and doc.metadata["ocr_skipped"] == ["pages 1-3: blank page"]


# ---- tall strips and blank pages ----------------------------------------------------------------------
class BarEngine:
    """Finds the dark bars of an image (rows with black pixels) and reads each as "w<its width>";
    records the size of every image it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        self.calls.append(image.size)
        dark = np.asarray(image.convert("L")) < 128
        rows = np.flatnonzero(dark.any(axis=1))
        lines = []
        for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if rows.size else []:
            width = int(dark[run[0]].sum())
            lines.append(OcrLine(f"w{width}", 0.9, 0, float(run[0]), float(width), float(run[-1] + 1)))
        return lines


def test_tall_strip_keeps_its_width_and_is_read_in_tiles_without_duplicates() -> None:
    receipt = Image.new("L", (300, 9000), 255)  # 30:1, a till receipt
    draw = ImageDraw.Draw(receipt)
    widths = [100 + 3 * i for i in range(59)]
    for i, width in enumerate(widths):
        draw.rectangle((0, 60 + 150 * i, width - 1, 60 + 150 * i + 29), fill=0)
    engine = BarEngine()
    page = read_page(receipt, options(engine))
    assert page.text.split() == [f"w{w}" for w in widths]
    assert len(engine.calls) == 5 and all(size[0] == 300 and size[1] <= DETECT_SIDE for size in engine.calls)
    # a normal page, even a tall one under STRIP_ASPECT, is read whole as before
    engine = BarEngine()
    read_page(Image.new("L", (500, 3900), 255), options(engine))
    assert engine.calls == []  # blank
    page = Image.new("L", (500, 3900), 255)
    ImageDraw.Draw(page).rectangle((0, 100, 200, 130), fill=0)
    read_page(page, options(engine))
    assert engine.calls == [(500, 3900)]


def test_blank_detection_tolerates_scanner_noise_but_not_a_word() -> None:
    rng = np.random.default_rng(7)
    noisy = np.clip(235 + rng.normal(0, 6, (1754, 1240)), 0, 255).astype(np.uint8)
    assert is_blank(Image.new("RGB", (2480, 3508), "white")) and is_blank(Image.fromarray(noisy))
    word = Image.fromarray(noisy)
    ImageDraw.Draw(word).text((600, 800), "Yes", fill=0)  # Pillow's default bitmap font: a few dozen pixels
    assert not is_blank(word)
    assert not is_blank(of.scan_image())


# ---- page and time budgets -------------------------------------------------------------------------------
class SlowEngine(of.ScriptedEngine):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        time.sleep(self.seconds)
        return super().recognize(image)


def _ingest(tmp_path: Path, engine, **settings):
    docs = tmp_path / "docs"
    docs.mkdir()
    of.write_image_pdf(docs, "book.pdf", pages=5)
    of.write_image(docs, "notice.png")
    (docs / "notes.txt").write_text("Plain notes about the pump. " * 10, encoding="utf-8")
    services = build_services(Settings(data_dir=tmp_path / "data", vector_backend="local", **settings),
                              embedder=HashEmbedder(dim=64))
    ingestor = build_ingestor(services, "scans")
    ingestor.ocr = dataclasses.replace(ingestor.ocr, engine=engine)
    report = ingestor.ingest_folder(docs)
    kb = services.kbs.open("scans")
    pages = {c.page for c in kb.get_chunks(sorted(kb.store.ids(kb.collection))).values() if c.source == "book.pdf"}
    services.close()
    return {f.source: (f.status, f.reason) for f in report.files}, pages


def test_page_budget_stops_a_file_and_the_folder_is_indexed(tmp_path: Path) -> None:
    engine = of.ScriptedEngine()
    status, pages = _ingest(tmp_path, engine, ocr_max_pages=2)
    assert status["book.pdf"] == ("indexed", "OCR stopped after 2 of 5 pages (page budget 2, RAG_OCR_MAX_PAGES): "
                                             "pages 3-5 not read")
    assert pages and pages <= {1, 2}  # chunks start on the pages read (equal page texts share one chunk)
    assert status["notice.png"] == ("indexed", "") and status["notes.txt"] == ("indexed", "")
    assert len(engine.calls) == 3  # two pages of the PDF, the image


def test_time_budget_stops_a_file_and_the_folder_is_indexed(tmp_path: Path) -> None:
    status, pages = _ingest(tmp_path, SlowEngine(0.4), ocr_max_seconds_per_file=1.0)
    state, reason = status["book.pdf"]
    stop = re.fullmatch(r"OCR stopped after (\d) of 5 pages \(time budget 1 s, RAG_OCR_MAX_SECONDS_PER_FILE\): "
                        r"pages? (\d)(-5)? not read", reason)
    assert state == "indexed" and stop, reason
    read = int(stop.group(1))
    assert 1 <= read < 5 and int(stop.group(2)) == read + 1 and pages and pages <= set(range(1, read + 1))
    assert status["notice.png"] == ("indexed", "") and status["notes.txt"] == ("indexed", "")


def test_page_budget_applies_to_the_frames_of_an_image(tmp_path: Path) -> None:
    engine = of.ScriptedEngine()
    path = of.write_multipage_tiff(tmp_path, blanks=())
    doc = parse_image(path.read_bytes(), "tiff", "scan", ocr=options(engine, max_pages=1))
    assert doc.metadata["ocr_pages"] == [1] and len(engine.calls) == 1
    assert doc.metadata["ocr_skipped"] == ["OCR stopped after 1 of 3 pages (page budget 1, RAG_OCR_MAX_PAGES): "
                                           "pages 2-3 not read"]


def test_budget_settings_are_validated_and_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RAG_OCR_MAX_PAGES", "40")
    monkeypatch.setenv("RAG_OCR_MAX_SECONDS_PER_FILE", "90")
    settings = Settings()
    assert settings.ocr_max_pages == 40 and settings.ocr_max_seconds_per_file == 90
    for bad in ({"ocr_max_pages": 0}, {"ocr_max_seconds_per_file": 0}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            Settings(**bad)


# ---- a file an OCR budget stopped: re-read only once that budget is raised ----------------------------
def _rag_ingest(docs: Path, monkeypatch, **budget: str):
    for key, value in budget.items():
        monkeypatch.setenv(key, value)
    return run("ingest", str(docs), "--kb", "scans", "--quiet")


def test_rag_ingest_rereads_a_file_stopped_by_the_page_budget_only_when_it_is_raised(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    engine = of.ScriptedEngine()
    monkeypatch.setattr(ocr_module, "shared_engine", lambda: engine)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    docs = tmp_path / "docs"
    docs.mkdir()
    of.write_image_pdf(docs, "book.pdf", pages=5)
    (docs / "notes.txt").write_text("Plain notes about the pump. " * 10, encoding="utf-8")

    first = _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_PAGES="2")
    assert first.exit_code == 3, first.output
    assert ("partial  book.pdf: OCR stopped after 2 of 5 pages (page budget 2, RAG_OCR_MAX_PAGES): pages 3-5 not read"
            in first.output)
    assert len(engine.calls) == 2

    for same_or_lower in ("2", "1"):  # never OCR'd again for nothing
        again = _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_PAGES=same_or_lower)
        assert again.exit_code == 0, again.output
        assert "files indexed: 0   unchanged: 2" in again.output
        assert ("note     book.pdf: indexed in part: OCR stopped at RAG_OCR_MAX_PAGES=2 (raise it to read the rest)"
                in again.output)
        assert len(engine.calls) == 2
    # the other budget raised: the page budget still stops it where it did
    assert "unchanged: 2" in _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_SECONDS_PER_FILE="6000").output

    raised = _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_PAGES="4")
    assert "files indexed: 1   unchanged: 1" in raised.output
    assert "partial  book.pdf: OCR stopped after 4 of 5 pages" in raised.output
    assert len(engine.calls) == 6
    assert "unchanged: 2" in _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_PAGES="4").output

    whole = _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_PAGES="10")
    assert whole.exit_code == 0 and "files indexed: 1   unchanged: 1" in whole.output, whole.output
    assert "partial" not in whole.output and len(engine.calls) == 11
    settled = _rag_ingest(docs, monkeypatch, RAG_OCR_MAX_PAGES="10")
    assert "unchanged: 2" in settled.output and "note" not in settled.output and len(engine.calls) == 11


def test_a_file_stopped_by_the_time_budget_is_read_again_when_that_budget_is_raised(tmp_path: Path) -> None:
    engine = SlowEngine(0.3)
    status, _ = _ingest(tmp_path, engine, ocr_max_seconds_per_file=0.5)
    assert status["book.pdf"][0] == "indexed" and "RAG_OCR_MAX_SECONDS_PER_FILE" in status["book.pdf"][1]
    calls = len(engine.calls)

    def rerun(**settings) -> tuple[str, str]:
        services = build_services(Settings(data_dir=tmp_path / "data", vector_backend="local", **settings),
                                  embedder=HashEmbedder(dim=64))
        ingestor = build_ingestor(services, "scans")
        ingestor.ocr = dataclasses.replace(ingestor.ocr, engine=engine)
        try:
            result = {f.source: f for f in ingestor.ingest_folder(tmp_path / "docs").files}["book.pdf"]
        finally:
            services.close()
        return result.status, result.note

    assert rerun(ocr_max_seconds_per_file=0.5) == (
        "unchanged", "indexed in part: OCR stopped at RAG_OCR_MAX_SECONDS_PER_FILE=0.5 (raise it to read the rest)")
    assert rerun(ocr_max_seconds_per_file=0.5, ocr_max_pages=1000)[0] == "unchanged"
    assert len(engine.calls) == calls
    assert rerun(ocr_max_seconds_per_file=60) == ("updated", "")
    assert len(engine.calls) == calls + 5
