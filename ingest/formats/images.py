"""Images as documents (.png .jpg .jpeg .tif/.tiff .bmp .webp): every frame OCR'd (a multi-page
TIFF gives one page per frame). The pixel count is checked from the header before anything is
decoded, so a decompression bomb is refused without allocating it; a corrupt frame of a multi-page
file is skipped with its reason and the other frames kept. Frames past the file's OCR budget
(pages, seconds) are not read and reported."""

from __future__ import annotations

import io
import logging
import warnings

from ingest.formats.builder import DocBuilder
from ingest.formats.ocr import OcrOptions, OcrRecorder
from ingest.formats.ocr_image import fit_scale
from rag.errors import ParseError
from rag.types import ParsedDocument

log = logging.getLogger(__name__)

IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp",
                 ".webp": "webp"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def parse_image(data: bytes, fmt: str, stem: str, *, ocr: OcrOptions) -> ParsedDocument:
    if not ocr.enabled:
        raise ParseError(f"image files need OCR, which is off ({ocr.off_by})")
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; the limit below decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ParseError(f"image too large to decode safely: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise ParseError(f"corrupt or unrecognised image: {exc}") from exc
        frames = getattr(image, "n_frames", 1) or 1
        builder = DocBuilder(fmt)
        builder.metadata.update(pages=frames, width=image.width, height=image.height)
        recorder = OcrRecorder(builder, ocr, stem, frames)
        for index in range(frames):
            label = index + 1
            if not recorder.due(label):
                continue
            try:
                image.seek(index)
                check_pixels(image.width, image.height, ocr.max_pixels)
                scale = fit_scale(image.width, image.height, ocr.max_side)
                if image.format == "JPEG" and scale < 1:  # decode at a reduced scale (1/2, 1/4, 1/8)
                    image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
                image.load()
                frame = ImageOps.exif_transpose(image) if index == 0 else image
            except ParseError as exc:
                if frames == 1:
                    raise
                recorder.skip(label, exc.message)
                continue
            except Image.DecompressionBombError as exc:
                if frames == 1:
                    raise ParseError(f"image too large to decode safely: {exc}") from exc
                recorder.skip(label, f"too large to decode safely: {exc}")
                continue
            except _DECODE_ERRORS as exc:
                if frames == 1:
                    raise ParseError(f"corrupt image: {type(exc).__name__}: {exc}") from exc
                recorder.skip(label, f"corrupt frame: {type(exc).__name__}: {exc}")
                continue
            recorder.add(frame, label if frames > 1 else None, label)
    recorder.finish()
    if builder.is_empty:
        reasons = "; ".join(recorder.skipped) or "no text"
        raise ParseError(f"no text found by OCR ({reasons})")
    return builder.build(stem)


def check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ParseError(f"image too large: {width} x {height} pixels ({width * height / 1e6:.0f} megapixels) is over "
                         f"the limit of {limit / 1e6:.0f} megapixels (RAG_OCR_MAX_PIXELS)")
