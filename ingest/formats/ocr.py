"""OCR of page images with the PP-OCRv4 models bundled in `rapidocr-onnxruntime` (Chinese and
English, ONNX; nothing is downloaded): the engine, reading a page, and adding OCR'd pages to a
document within the file's page and time budget (page images: ingest/formats/ocr_image.py; reading
order: ingest/formats/ocr_layout.py).

The engine loads on first use, once per process, and runs one page at a time (a lock): memory
stays at one page image plus the models whatever the number of ingest threads."""

from __future__ import annotations

import logging
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ingest.formats.ocr_image import DETECT_SIDE, fit_image, is_blank, tiles
from ingest.formats.ocr_layout import OcrLine, layout_text
from rag.errors import ParseError

if TYPE_CHECKING:
    from PIL.Image import Image

    from ingest.formats.builder import DocBuilder

log = logging.getLogger(__name__)

PageProgress = Callable[[str, int, int], None]  # (document, page done, pages)
# the per-file OCR budgets, by their settings: `metadata["ocr_stopped"]` names the one that stopped a file
PAGE_BUDGET = "RAG_OCR_MAX_PAGES"
TIME_BUDGET = "RAG_OCR_MAX_SECONDS_PER_FILE"
_O_AMONG_DIGITS_RE = re.compile(r"(?<=\d)[oO](?=\d)")


class OcrEngine(Protocol):
    """Recognises the text boxes of one RGB page image."""

    def recognize(self, image: Image) -> list[OcrLine]: ...


@dataclass(frozen=True)
class OcrOptions:
    """How scanned pages and images are read. `enabled` False: never OCR (images are skipped,
    PDF pages without a text layer are dropped). Pages are rendered at `dpi`, downscaled to at
    most `max_side` pixels (ingest/formats/ocr_image.py); images over `max_pixels` are refused
    before they are decoded. A file's OCR stops after `max_pages` pages, or at the next page once
    `max_seconds` have passed since its first; what was read is kept, the rest reported."""

    enabled: bool = True
    dpi: int = 300
    max_side: int = 4000
    max_pixels: int = 89_478_485  # Pillow's own default MAX_IMAGE_PIXELS
    max_pages: int = 500
    max_seconds: float = 600.0
    engine: OcrEngine | None = None  # None: the bundled RapidOCR engine, shared by the process
    progress: PageProgress | None = None
    off_by: str = "RAG_OCR=off"  # what turned it off, for the skip reasons (`ingest.service.ocr_off_by`)

    def get_engine(self) -> OcrEngine:
        return self.engine if self.engine is not None else shared_engine()

    def budget(self, setting: str) -> float:
        """The value of the per-file budget named by its setting (`PAGE_BUDGET` or `TIME_BUDGET`)."""
        return float(self.max_pages) if setting == PAGE_BUDGET else self.max_seconds


DEFAULT_OCR = OcrOptions()
OCR_OFF = OcrOptions(enabled=False)


ENGINE_MAX_SIDE = 20_000  # RapidOCR's own downscaling, a safety net: fit_image has sized the image


class RapidOcrEngine:
    """`rapidocr_onnxruntime.RapidOCR` behind the `OcrEngine` protocol; loads on first use.

    The text direction classifier is not used: it turns long upright lines upside down (whole lines
    of an English paragraph came back as noise and were dropped), and pages come upright (PDF page
    rotation is applied when rendering, photo orientation from EXIF). RapidOCR's own downscaling of
    the whole image to 2000 pixels is disabled (`fit_image` has sized it) and so is its upscaling
    of a short side (`fit_image` pads it; upscaled, a 4000 x 2 strip took 3 GB): detection runs on
    a copy of at most `DETECT_SIDE` pixels (`det_limit_type` "max" only shrinks), recognition on
    crops of the full image. On an A4 page scanned at 150 dpi (upscaled to 2482 x 3508) that took
    detection from 17.6 s to 4.2 s and peak RSS from 1,566 MB to 763 MB, with the same character
    error rate."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._ocr: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ParseError("OCR needs rapidocr-onnxruntime: pip install rapidocr-onnxruntime==1.4.4") from exc
        started = time.perf_counter()
        kwargs: dict[str, Any] = {"max_side_len": ENGINE_MAX_SIDE, "min_side_len": 0, "use_cls": False,
                                  "det_limit_type": "max", "det_limit_side_len": DETECT_SIDE}
        if self.threads > 0:
            kwargs["intra_op_num_threads"] = self.threads
        engine = RapidOCR(**kwargs)
        log.info("loaded the RapidOCR PP-OCRv4 models in %.2f s", time.perf_counter() - started)
        return engine

    def recognize(self, image: Image) -> list[OcrLine]:
        import numpy as np

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        with self._lock:
            if self._ocr is None:
                self._ocr = self._load()
            result, _ = self._ocr(bgr, use_cls=False)
        lines = []
        for box, text, score in result or ():
            xs = [p[0] for p in box]
            ys = [p[1] for p in box]
            text = str(text).strip()
            if text:
                lines.append(OcrLine(text, float(score), min(xs), min(ys), max(xs), max(ys)))
        return lines


_shared: RapidOcrEngine | None = None
_shared_lock = threading.Lock()


def shared_engine() -> RapidOcrEngine:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RapidOcrEngine()
        return _shared


# -- pages -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageText:
    """The OCR of one page: its text with line breaks and blank lines between paragraphs."""

    text: str
    confidence: float  # mean recognition confidence of its lines; 0 when none
    lines: int
    seconds: float
    blank: bool = False  # a blank page: not recognised


def read_page(image: Image, options: OcrOptions) -> PageText:
    """OCR one page image: fitted (ParseError when too thin to hold text), skipped when blank, a
    tall strip read tile by tile (ingest/formats/ocr_image.py)."""
    started = time.perf_counter()
    image = fit_image(image, options.max_side)
    if is_blank(image):
        return PageText("", 0.0, 0, time.perf_counter() - started, blank=True)
    engine = options.get_engine()
    boxes: list[OcrLine] = []
    for top, keep_from, keep_to, tile in tiles(image):
        for b in engine.recognize(tile):
            if keep_from <= top + (b.y0 + b.y1) / 2 < keep_to:
                boxes.append(OcrLine(b.text, b.score, b.x0, b.y0 + top, b.x1, b.y1 + top))
    text = fix_digits(layout_text(boxes, image.width))
    confidence = statistics.fmean(b.score for b in boxes) if boxes else 0.0
    return PageText(text, confidence, len(boxes), time.perf_counter() - started)


def fix_digits(text: str) -> str:
    """Undo the recogniser's commonest slip in numbers: a letter o between two digits ("X2o0" ->
    "X200"; seen on DejaVu Sans at 150 and 300 dpi). No word has an o between two digits."""
    return _O_AMONG_DIGITS_RE.sub("0", text)


class OcrRecorder:
    """Adds OCR'd pages to a `DocBuilder` and keeps what the chunks and the report need:
    `metadata["ocr_spans"]` ([start, end, confidence] per OCR'd block), `ocr_pages`,
    `ocr_seconds` and `ocr_skipped` (pages that gave no text with the reason, pages with the same
    reason grouped, and where OCR stopped over the file's page or time budget), and `ocr_stopped`
    when a budget stopped it ("RAG_OCR_MAX_PAGES=500": the setting and the value it was read under)."""

    def __init__(self, builder: DocBuilder, options: OcrOptions, name: str, pages: int) -> None:
        self.builder = builder
        self.options = options
        self.name = name
        self.pages = pages
        self.spans: list[list[float]] = []
        self.ocr_pages: list[int] = []
        self.reasons: dict[str, list[int]] = {}  # reason -> pages, in order of first occurrence
        self.seconds = 0.0
        self.done = 0  # pages let through `due`
        self.started: float | None = None
        self.stopped: str | None = None  # the budget that stopped OCR
        self.stopped_by = ""  # its setting: PAGE_BUDGET or TIME_BUDGET
        self.left_out: list[int] = []  # pages not OCR'd because of it

    def due(self, label: int) -> bool:
        """Whether page `label` may be OCR'd now: False once the file has had `max_pages` pages or
        `max_seconds` since its first (a page under way is not interrupted); `finish` reports them."""
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        if self.stopped is None and self.done >= self.options.max_pages:
            self.stopped, self.stopped_by = f"page budget {self.options.max_pages}, {PAGE_BUDGET}", PAGE_BUDGET
        elif self.stopped is None and now - self.started >= self.options.max_seconds:
            self.stopped, self.stopped_by = f"time budget {self.options.max_seconds:g} s, {TIME_BUDGET}", TIME_BUDGET
        if self.stopped is not None:
            if not self.left_out:
                log.warning("%s: OCR stopped at page %d (%s)", self.name, label, self.stopped)
            self.left_out.append(label)
            return False
        self.done += 1
        return True

    def add(self, image: Image, page: int | None, label: int) -> None:
        """OCR `image` and add its paragraphs with page number `page`; `label` is the 1-based
        page or frame number used in messages."""
        from ingest.formats.pdf import page_paragraphs

        try:
            result = read_page(image, self.options)
        except ParseError as exc:  # too thin to hold text: refused before any resize
            self.skip(label, exc.message)
            return
        self.seconds += result.seconds
        log.info("%s: OCR page %d/%d in %.1f s: %d lines, confidence %.2f%s", self.name, label, self.pages,
                 result.seconds, result.lines, result.confidence, " (blank)" if result.blank else "")
        if self.options.progress is not None:
            self.options.progress(self.name, label, self.pages)
        if result.blank:
            self.skip(label, "blank page", warn=False)
            return
        added = False
        for kind, para, depth in page_paragraphs(result.text):
            block = (self.builder.heading(para, depth, page=page) if kind == "title"
                     else self.builder.add(para, kind, page=page))
            if block is not None:
                self.spans.append([block.start, block.end, round(result.confidence, 4)])
                added = True
        if added:
            self.ocr_pages.append(label)
        else:
            self.skip(label, "OCR found no text")

    def skip(self, label: int, reason: str, *, warn: bool = True) -> None:
        if warn:
            log.warning("%s: page %d skipped: %s", self.name, label, reason)
        self.reasons.setdefault(reason, []).append(label)

    @property
    def skipped(self) -> list[str]:
        """"page 2: OCR found no text", "pages 4-9, 12: blank page", then where OCR stopped."""
        out = [f"{page_list(labels)}: {reason}" for reason, labels in self.reasons.items()]
        if self.stopped is not None:
            out.append(f"OCR stopped after {self.done} of {self.done + len(self.left_out)} pages ({self.stopped}): "
                       f"{page_list(self.left_out)} not read")
        return out

    def finish(self) -> None:
        """Record the OCR metadata (nothing when no page needed OCR)."""
        meta = self.builder.metadata
        skipped = self.skipped
        if self.ocr_pages or skipped:
            meta["ocr_seconds"] = round(self.seconds, 3)
        if self.ocr_pages:
            meta["ocr_pages"] = self.ocr_pages
            meta["ocr_spans"] = self.spans
        if skipped:
            meta["ocr_skipped"] = skipped
        if self.stopped_by:
            meta["ocr_stopped"] = f"{self.stopped_by}={self.options.budget(self.stopped_by):g}"


def page_list(labels: list[int]) -> str:
    """[3] -> "page 3"; [1, 2, 3, 7] -> "pages 1-3, 7"."""
    runs: list[list[int]] = []
    for label in sorted(labels):
        if runs and label == runs[-1][1] + 1:
            runs[-1][1] = label
        else:
            runs.append([label, label])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"page {text}" if len(labels) == 1 else f"pages {text}"


def chunk_ocr(metadata: dict[str, Any], start: int, end: int) -> tuple[bool, float | None]:
    """Whether the span [start, end) of a parsed document came from OCR, and the mean
    confidence of the OCR'd text in it (weighted by overlap)."""
    total = weighted = 0.0
    for span_start, span_end, confidence in metadata.get("ocr_spans") or ():
        overlap = min(end, span_end) - max(start, span_start)
        if overlap > 0:
            total += overlap
            weighted += overlap * confidence
    if total <= 0:
        return False, None
    return True, round(weighted / total, 4)
