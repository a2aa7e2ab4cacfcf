"""The scanned pages of a PDF: which pages need OCR, and rendering them with PDFium (pypdfium2,
its own engine inside the wheel; no poppler). A page is OCR'd when it has no text layer (and
draws something), or when one image covers most of it and it has almost no text (a scan with a
stamped header or page number). Pages with a real text layer are never OCR'd, nor is a page with
a few words and no big image (a title page, a diagram with labels). The render scale comes from
the page size before rendering: both sides and the pixel count bounded (`fit_scale`), and a page
too thin to hold text is skipped unrendered. Pages past the file's OCR budget are not rendered."""

from __future__ import annotations

import logging
from typing import Any

from ingest.formats.builder import DocBuilder
from ingest.formats.ocr import OcrOptions, OcrRecorder
from ingest.formats.ocr_image import check_thin, fit_scale
from rag.errors import ParseError

log = logging.getLogger(__name__)

SCAN_TEXT_CHARS = 200  # "almost no text" on a page mostly covered by one image
SCAN_IMAGE_AREA = 0.5  # share of the page one image must cover to count as a scan


class PdfScans:
    """Decides and OCRs the scanned pages of one PDF; opens PDFium only when a candidate page
    (little or no text) turns up."""

    def __init__(self, data: bytes, options: OcrOptions, name: str, pages: int, builder: DocBuilder) -> None:
        self.data = data
        self.options = options
        self.name = name
        self.recorder = OcrRecorder(builder, options, name, pages)
        self._pdf: Any = None
        self._failed: str | None = None

    def wants(self, number: int, text: str) -> bool:
        """Whether page `number` (1-based), whose text layer is `text`, is to be OCR'd."""
        chars = sum(1 for ch in text if not ch.isspace())
        if chars >= SCAN_TEXT_CHARS:
            return False
        page = self._page(number)
        if page is None:
            return False
        try:
            objects = list(page.get_objects())
            if chars == 0:
                return bool(objects)  # no text layer; an empty page has nothing to read
            return largest_image(page, objects)[0] >= SCAN_IMAGE_AREA
        finally:
            page.close()

    def add(self, number: int) -> None:
        """Render page `number` and add its OCR'd text (or record why it gave none)."""
        import pypdfium2 as pdfium

        if not self.recorder.due(number):
            return
        page = self._page(number)
        if page is None:
            self.recorder.skip(number, f"cannot render: {self._failed}")
            return
        try:
            width, height = page.get_size()
            dpi = float(self.options.dpi)
            share, native = largest_image(page, list(page.get_objects()))
            if share >= SCAN_IMAGE_AREA and native:
                dpi = min(dpi, max(native, 72.0))  # no resampling of a low-resolution scan: fit_image upscales it
            scale = min(dpi / 72, fit_scale(width, height, self.options.max_side))
            check_thin(width, height, scale, "points")
            image = page.render(scale=scale).to_pil()
            image.info["dpi"] = (scale * 72, scale * 72)
        except pdfium.PdfiumError as exc:
            self.recorder.skip(number, f"cannot render: {exc}")
            return
        except ParseError as exc:
            self.recorder.skip(number, exc.message)
            return
        finally:
            page.close()
        self.recorder.add(image, number, number)

    def finish(self) -> None:
        self.recorder.finish()
        if self._pdf is not None:
            self._pdf.close()

    def _page(self, number: int) -> Any:
        import pypdfium2 as pdfium

        if self._failed is not None:
            return None
        try:
            if self._pdf is None:
                self._pdf = pdfium.PdfDocument(self.data)
            return self._pdf[number - 1]
        except (pdfium.PdfiumError, IndexError) as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            log.warning("%s: PDFium cannot open the PDF for OCR: %s", self.name, self._failed)
            return None


def largest_image(page: Any, objects: list[Any]) -> tuple[float, float | None]:
    """The share of the page area covered by its largest image object (0..1), and that image's
    resolution in dots per inch as placed on the page (None when there is no image)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    left, bottom, right, top = page.get_bbox()
    area = max((right - left) * (top - bottom), 1e-6)
    best, native = 0.0, None
    for obj in objects:
        if obj.type != pdfium_c.FPDF_PAGEOBJ_IMAGE:
            continue
        x0, y0, x1, y1 = obj.get_bounds()
        w = max(0.0, min(x1, right) - max(x0, left))
        h = max(0.0, min(y1, top) - max(y0, bottom))
        if w * h / area > best:
            best = w * h / area
            try:
                px_width, _ = obj.get_px_size()
                native = px_width / max((x1 - x0) / 72, 1e-6)
            except pdfium.PdfiumError:
                native = None
    return best, native
