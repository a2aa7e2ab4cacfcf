"""OCR of page images with the PP-OCRv4 models bundled in `rapidocr-onnxruntime` (Chinese and
English, ONNX; nothing is downloaded): the engine, page image preparation, and adding OCR'd pages
to a document (reading order: ingest/formats/ocr_layout.py).

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

from ingest.formats.ocr_layout import OcrLine, layout_text
from rag.errors import ParseError

if TYPE_CHECKING:
    from PIL.Image import Image

    from ingest.formats.builder import DocBuilder

log = logging.getLogger(__name__)

PageProgress = Callable[[str, int, int], None]  # (document, page done, pages)
_O_AMONG_DIGITS_RE = re.compile(r"(?<=\d)[oO](?=\d)")


class OcrEngine(Protocol):
    """Recognises the text boxes of one RGB page image."""

    def recognize(self, image: Image) -> list[OcrLine]: ...


@dataclass(frozen=True)
class OcrOptions:
    """How scanned pages and images are read. `enabled` False: never OCR (images are skipped,
    PDF pages without a text layer are dropped). Pages are rendered at `dpi`, downscaled to at
    most `max_side` pixels; images over `max_pixels` are refused before they are decoded."""

    enabled: bool = True
    dpi: int = 300
    max_side: int = 4000
    max_pixels: int = 89_478_485  # Pillow's own default MAX_IMAGE_PIXELS
    engine: OcrEngine | None = None  # None: the bundled RapidOCR engine, shared by the process
    progress: PageProgress | None = None

    def get_engine(self) -> OcrEngine:
        return self.engine if self.engine is not None else shared_engine()


DEFAULT_OCR = OcrOptions()
OCR_OFF = OcrOptions(enabled=False)


DETECT_SIDE = 2000  # longer side of the image the text detector sees


class RapidOcrEngine:
    """`rapidocr_onnxruntime.RapidOCR` behind the `OcrEngine` protocol; loads on first use.

    The text direction classifier is not used: it turns long upright lines upside down (whole lines
    of an English paragraph came back as noise and were dropped), and pages come upright (PDF page
    rotation is applied when rendering, photo orientation from EXIF). RapidOCR's own downscaling of
    the whole image to 2000 pixels is disabled (`fit_image` has sized it): detection runs on a copy
    of at most `DETECT_SIDE` pixels, recognition on crops of the full image. On an A4 page scanned at
    150 dpi (upscaled to 2482 x 3508) that took detection from 17.6 s to 4.2 s and peak RSS from
    1,566 MB to 763 MB, with the same character error rate."""

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
        kwargs: dict[str, Any] = {"max_side_len": 100_000, "use_cls": False, "det_limit_type": "max",
                                  "det_limit_side_len": DETECT_SIDE}
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


# -- page images --------------------------------------------------------------------------------


MIN_DPI = 300  # a page image of lower resolution is upscaled 2x (at most to max_side) before OCR
SMALL_SIDE = 2000  # ... and so is one of unknown resolution smaller than this on its longer side


def fit_image(image: Image, max_side: int) -> Image:
    """An RGB copy for OCR (transparency over white, 16-bit and float greyscale stretched to 8
    bits), no larger than `max_side` on its longer side. An image under 300 dpi (or, without a
    DPI, under 2000 pixels) is upscaled 2x with Lanczos: the recogniser drops spaces between
    English words on small text (paragraph at 150 dpi: CER 10 %, upscaled 0.2 %; A4 page scanned
    at 300 dpi and read at 200 dpi: 0.7 %, at 300 dpi: 0.46 %; docs/benchmarks.md)."""
    from PIL import Image as PILImage

    dpi = image.info.get("dpi") or (0, 0)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = PILImage.fromarray(scaled.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PILImage.alpha_composite(background, rgba)
    image = image.convert("RGB")
    longest = max(image.size)
    scale = 1.0
    if longest > max_side:
        scale = max_side / longest
    elif _upscale(longest, min(_number(v) for v in dpi)):
        scale = min(2.0, max_side / longest)
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    return image


@dataclass(frozen=True)
class PageText:
    """The OCR of one page: its text with line breaks and blank lines between paragraphs."""

    text: str
    confidence: float  # mean recognition confidence of its lines; 0 when none
    lines: int
    seconds: float


def read_page(image: Image, options: OcrOptions) -> PageText:
    started = time.perf_counter()
    image = fit_image(image, options.max_side)
    boxes = options.get_engine().recognize(image)
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
    `ocr_seconds` and `ocr_skipped` (pages that gave no text, with the reason)."""

    def __init__(self, builder: DocBuilder, options: OcrOptions, name: str, pages: int) -> None:
        self.builder = builder
        self.options = options
        self.name = name
        self.pages = pages
        self.spans: list[list[float]] = []
        self.ocr_pages: list[int] = []
        self.skipped: list[str] = []
        self.seconds = 0.0

    def add(self, image: Image, page: int | None, label: int) -> None:
        """OCR `image` and add its paragraphs with page number `page`; `label` is the 1-based
        page or frame number used in messages."""
        from ingest.formats.pdf import page_paragraphs

        result = read_page(image, self.options)
        self.seconds += result.seconds
        log.info("%s: OCR page %d/%d in %.1f s: %d lines, confidence %.2f", self.name, label, self.pages,
                 result.seconds, result.lines, result.confidence)
        if self.options.progress is not None:
            self.options.progress(self.name, label, self.pages)
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

    def skip(self, label: int, reason: str) -> None:
        log.warning("%s: page %d skipped: %s", self.name, label, reason)
        self.skipped.append(f"page {label}: {reason}")

    def finish(self) -> None:
        """Record the OCR metadata (nothing when no page needed OCR)."""
        meta = self.builder.metadata
        if self.ocr_pages or self.skipped:
            meta["ocr_seconds"] = round(self.seconds, 3)
        if self.ocr_pages:
            meta["ocr_pages"] = self.ocr_pages
            meta["ocr_spans"] = self.spans
        if self.skipped:
            meta["ocr_skipped"] = self.skipped


def _upscale(longest: int, dpi: float) -> bool:
    """Below MIN_DPI (less a rounding margin) when the resolution is known, else when the image is small."""
    return dpi < MIN_DPI - 1 if dpi > 0 else longest < SMALL_SIDE


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


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
