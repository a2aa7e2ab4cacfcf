"""Page images sized for OCR, with both sides bounded before anything is resized: the scale a page
is rendered or resampled at, the fitted RGB copy, tall strips cut into tiles, and blank pages.

RapidOCR upscales an image whose shorter side is under 30 pixels until it is 30 (the whole image:
a 4000 x 2 PNG became 60,000 x 32 and, letterboxed, 60,000 x 15,000 pixels, 3.0 GB). Here a side
under `MIN_TEXT_SIDE` pixels is refused (it cannot hold a line of text) and one under `MIN_SIDE`
is padded with white, so the engine never resizes up. A wide strip is read whole (the detector
letterboxes it to a quarter of its width; it is usually one line of text, which tiles would cut);
a tall one (a till receipt) keeps its width and is read in overlapping tiles."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rag.errors import ParseError

if TYPE_CHECKING:
    from PIL.Image import Image

DETECT_SIDE = 2000  # longer side of the image the text detector sees (and height of a strip's tiles)
MIN_DPI = 300  # a page image of lower resolution is upscaled 2x (at most to max_side) before OCR
SMALL_SIDE = 2000  # ... and so is one of unknown resolution smaller than this on its longer side
MIN_SIDE = 30  # RapidOCR's min_side_len: a shorter side is padded to it with white, never upscaled
MIN_TEXT_SIDE = 8  # pixels: a page image thinner than this after fitting holds no readable line
STRIP_ASPECT = 8  # a page over 8x taller than wide is a strip (RapidOCR's own width/height bound)
MAX_TILES = 20  # a strip is at most 20 tiles of DETECT_SIDE pixels tall
TILE_OVERLAP = 200  # pixels shared by neighbouring tiles; a box belongs to the tile holding its centre
BLANK_CONTRAST = 64  # grey levels from the background that make a pixel ink
BLANK_INK = 1e-5  # share of ink pixels (at least 4) under which a page is blank: no recognition


def fit_scale(width: float, height: float, max_side: int) -> float:
    """The largest scale a `width` x `height` page may be rendered or resampled at: its longer
    side within `max_side`; a tall strip (over STRIP_ASPECT) within `max_side` wide, `max_side`²
    pixels and MAX_TILES tiles tall. Both sides and the pixel count are bounded either way."""
    width, height = max(width, 1e-6), max(height, 1e-6)
    if height > STRIP_ASPECT * width:
        return min(max_side / width, max_side / math.sqrt(width * height), MAX_TILES * DETECT_SIDE / height)
    return max_side / max(width, height)


def check_thin(width: float, height: float, scale: float, unit: str = "pixels") -> None:
    """Refuse (ParseError) a page whose shorter side would be under MIN_TEXT_SIDE pixels at `scale`."""
    if min(width, height) * scale >= MIN_TEXT_SIDE:
        return
    message = f"too thin to hold text: {width:g} x {height:g} {unit}"
    if scale != 1.0 or unit != "pixels":
        message += f", {width * scale:.0f} x {height * scale:.0f} pixels at the OCR scale"
    raise ParseError(f"{message} (under {MIN_TEXT_SIDE} pixels across)")


def fit_image(image: Image, max_side: int) -> Image:
    """An RGB copy for OCR (transparency over white, 16-bit and float greyscale stretched to 8
    bits), sized by `fit_scale` and padded with white to MIN_SIDE; ParseError when too thin. An
    image under 300 dpi (or, without a DPI, under 2000 pixels) is upscaled 2x with Lanczos: the
    recogniser drops spaces between English words on small text (paragraph at 150 dpi: CER 10 %,
    upscaled 0.2 %; A4 page scanned at 300 dpi and read at 200 dpi: 0.7 %, at 300 dpi: 0.46 %;
    docs/benchmarks.md)."""
    from PIL import Image as PILImage

    limit = fit_scale(image.width, image.height, max_side)
    dpi = image.info.get("dpi") or (0, 0)
    scale = 1.0
    if limit < 1.0:
        scale = limit
    elif _upscale(max(image.size), min(_number(v) for v in dpi)):
        scale = min(2.0, limit)
    check_thin(image.width, image.height, scale)
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
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    if min(image.size) < MIN_SIDE:
        padded = PILImage.new("RGB", (max(image.width, MIN_SIDE), max(image.height, MIN_SIDE)), "white")
        padded.paste(image, (0, 0))
        image = padded
    return image


def tiles(image: Image) -> Iterator[tuple[int, int, int, Image]]:
    """`(top, keep_from, keep_to, tile)` for reading `image`: itself when it is not a strip taller
    than DETECT_SIDE, else tiles DETECT_SIDE tall overlapping by TILE_OVERLAP; a box found in a tile
    is kept when its centre (page coordinates) lies in [keep_from, keep_to)."""
    width, height = image.size
    if height <= STRIP_ASPECT * width or height <= DETECT_SIDE:
        yield 0, 0, height, image
        return
    step = DETECT_SIDE - TILE_OVERLAP
    for top in range(0, height, step):
        bottom = min(top + DETECT_SIDE, height)
        keep_from = 0 if top == 0 else top + TILE_OVERLAP // 2
        keep_to = height if bottom == height else bottom - TILE_OVERLAP // 2
        yield top, keep_from, keep_to, image.crop((0, top, width, bottom))
        if bottom == height:
            return


def is_blank(image: Image) -> bool:
    """Whether a page is blank or near-uniform: no more than BLANK_INK of its pixels (or 4) differ
    from the commonest grey level by BLANK_CONTRAST or more. A rendered white page, a
    plain scan of an empty sheet; a page with one short word is not blank."""
    histogram = image.convert("L").histogram()
    background = max(range(256), key=histogram.__getitem__)
    ink = sum(n for level, n in enumerate(histogram) if abs(level - background) >= BLANK_CONTRAST)
    return ink <= max(4, BLANK_INK * image.width * image.height)


def _upscale(longest: int, dpi: float) -> bool:
    """Below MIN_DPI (less a rounding margin) when the resolution is known, else when the image is small."""
    return dpi < MIN_DPI - 1 if dpi > 0 else longest < SMALL_SIDE


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
