"""A scripted OCR engine and scanned files (images, image-only and mixed PDFs) for the OCR tests."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ingest.formats.ocr_layout import OcrLine


class ScriptedEngine:
    """Returns `lines` for any page image with dark pixels, nothing for a blank one; records the
    size of every image it was given."""

    def __init__(self, lines: Sequence[OcrLine] | None = None) -> None:
        self.lines = list(lines) if lines is not None else paragraph_lines(["The pump warranty lasts two years."])
        self.calls: list[tuple[int, int]] = []

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        self.calls.append(image.size)
        darkest = image.convert("L").getextrema()[0]
        return [] if darkest > 128 else list(self.lines)


def paragraph_lines(texts: Sequence[str], *, x: float = 100, top: float = 100, height: float = 30,
                    width: float = 900, score: float = 0.9) -> list[OcrLine]:
    """One box per text, stacked at 1.5 line spacing."""
    return [OcrLine(t, score, x, top + i * 1.5 * height, x + width, top + i * 1.5 * height + height)
            for i, t in enumerate(texts)]


def scan_image(size: tuple[int, int] = (1240, 1754), blank: bool = False) -> Image.Image:
    """A page image with dark "text" bars (or a blank page)."""
    image = Image.new("RGB", size, "white")
    if not blank:
        draw = ImageDraw.Draw(image)
        for row in range(8):
            y = 150 + row * 60
            draw.rectangle((120, y, size[0] - 120, y + 25), fill="black")
    return image


def write_image(folder: Path, name: str, image: Image.Image | None = None, **save) -> Path:
    path = folder / name
    (image or scan_image()).save(path, **save)
    return path


def write_multipage_tiff(folder: Path, name: str = "scan.tiff", blanks: Sequence[int] = (2,)) -> Path:
    """Three frames; the 1-based frame numbers in `blanks` are blank pages."""
    frames = [scan_image(blank=i in blanks) for i in (1, 2, 3)]
    path = folder / name
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_deflate")
    return path


def write_image_pdf(folder: Path, name: str = "scan.pdf", pages: int = 1) -> Path:
    """An image-only PDF (no text layer), as a scanner writes it."""
    images = [scan_image() for _ in range(pages)]
    path = folder / name
    images[0].save(path, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return path


def write_mixed_pdf(folder: Path, name: str = "mixed.pdf", caption: bool = False) -> Path:
    """Page 1: a real text layer with a small logo image; page 2: a full-page scan (with a one-line
    text caption when `caption`)."""
    from fpdf import FPDF

    logo = io.BytesIO()
    Image.new("RGB", (60, 60), "navy").save(logo, "PNG")
    scan = io.BytesIO()
    scan_image().save(scan, "PNG")
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.image(logo, x=10, y=10, w=15)
    pdf.set_font("Helvetica", size=12)
    pdf.set_y(40)
    pdf.multi_cell(0, 6, "This page has a real text layer. " * 20)
    pdf.add_page()
    pdf.image(scan, x=0, y=0, w=210, h=297)
    if caption:
        pdf.set_font("Helvetica", size=8)
        pdf.set_xy(10, 285)
        pdf.cell(0, 5, "Scanned by ACME")
    path = folder / name
    pdf.output(str(path))
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with a tiny (wrong) image stream: a
    decompression bomb's header, without the bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def jpeg_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def thin_png(width: int = 4000, height: int = 2) -> bytes:
    """A tiny PNG of a thin strip (4000 x 2 by default: under 100 bytes) with a dark line across it."""
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).line((0, 0, width, 0), fill=0)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def drawn_pdf(pages: Sequence[tuple[float, float, str]]) -> bytes:
    """A PDF without a text layer whose pages are (width, height, content stream) in points, e.g. a
    MediaBox of [0 0 14400 1] filled black: "0 g 0 0 14400 1 re f". The cross-reference table is exact."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for width, height, content in pages:
        stream = content.encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] /Contents %d 0 R /Resources << >> >>"
                       % (width, height, len(objects)))
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def bars_content(width: float, height: float) -> str:
    """A content stream of dark "text" bars on a page of `width` x `height` points (a scanned page
    for the scripted engine), drawn as shapes: no text layer."""
    rows = [f"{width * 0.1:.1f} {height - (0.1 + 0.05 * i) * height:.1f} {width * 0.8:.1f} {height * 0.02:.1f} re"
            for i in range(8)]
    return "0 g " + " ".join(rows) + " f"


WHITE_PAGE = "1 g 0 0 {w} {h} re f"  # a page that draws only a white rectangle: blank, but not empty
