"""Known paragraphs rendered to page images, and character error rate, for checking OCR accuracy
(tests and `benchmarks/ocr.py`). English renders with the DejaVu Sans that matplotlib bundles;
Chinese needs a CJK font on the system (Debian: fonts-wqy-zenhei or fonts-noto-cjk)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

EN_PARAGRAPH = (
    "The Acme X200 water pump is covered by a limited warranty of two years from the date of purchase. "
    "The warranty covers defects in materials and workmanship under normal use. To make a claim, return "
    "the pump to an authorised service centre together with the original receipt. Damage caused by frost, "
    "dry running or an incorrect supply voltage is not covered. Replacement seals are available from the "
    "manufacturer under part number S-4471."
)
ZH_PARAGRAPH = (
    "本合同自双方签字盖章之日起生效，有效期为三年。甲方应于每月五日前向乙方支付上月的服务费用，"
    "逾期付款的，每日按未付金额的千分之一支付违约金。乙方应对甲方提供的资料严格保密，未经甲方书面同意，"
    "不得向任何第三方披露。合同期满前三十日内，双方可协商续签事宜。"
)
# the two columns of a two-column page; the answer to the retrieval check is only in the right column
TWO_COLUMN = (
    "Installation. Mount the pump on a level base close to the water source. Keep the suction pipe as short "
    "as possible and make sure that every joint is airtight before the first start.",
    "Maintenance. Clean the intake filter every three months. Before winter, drain the pump housing completely "
    "and store the unit in a dry room above five degrees.",
)
_CJK_FONT_GLOBS = ("**/wqy-zenhei.ttc", "**/wqy-microhei.ttc", "**/NotoSansCJK*-Regular.tt[fc]",
                   "**/NotoSerifCJK*-Regular.tt[fc]", "**/NotoSansSC-Regular.[ot]tf", "**/DroidSansFallback*.ttf")
_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")


def latin_font() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def cjk_font() -> Path | None:
    """A font with Chinese glyphs installed on this system, or None."""
    for folder in _FONT_DIRS:
        if not folder.is_dir():
            continue
        for pattern in _CJK_FONT_GLOBS:
            found = sorted(folder.glob(pattern))
            if found:
                return found[0]
    return None


def render_text(text: str, font: Path, dpi: int, *, width_in: float = 6.5, size_pt: float = 11.0,
                margin_in: float = 0.75, columns: int = 1, gutter_in: float = 0.4) -> Image:
    """`text` typeset in `columns` columns (a tuple of texts gives one text per column) on a
    white page `width_in` inches wide (plus margins) at `dpi`, 1.5 line spacing."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    texts = [text] if isinstance(text, str) else list(text)
    columns = max(columns, len(texts))
    px = round(size_pt / 72 * dpi)
    face = ImageFont.truetype(str(font), px)
    margin = round(margin_in * dpi)
    col_width = (width_in - gutter_in * (columns - 1)) / columns * dpi
    wrapped = [_wrap(t, face, col_width) for t in texts]
    pitch = round(px * 1.5)
    height = 2 * margin + pitch * max(len(lines) for lines in wrapped)
    page = PILImage.new("L", (round(width_in * dpi) + 2 * margin, height), 255)
    draw = ImageDraw.Draw(page)
    for index, lines in enumerate(wrapped):
        x = margin + round(index * (col_width + gutter_in * dpi))
        for row, line in enumerate(lines):
            draw.text((x, margin + row * pitch), line, font=face, fill=0)
    return page


def _wrap(text: str, face, width_px: float) -> list[str]:  # noqa: ANN001 - PIL FreeTypeFont
    """Greedy fill by measured width: words for Latin text, characters for Chinese."""
    cjk = re.search(r"[\u4e00-\u9fff]", text) is not None
    tokens = list(text) if cjk else text.split()
    sep = "" if cjk else " "
    lines: list[str] = []
    line = ""
    for token in tokens:
        candidate = f"{line}{sep}{token}" if line else token
        if line and face.getlength(candidate) > width_px:
            lines.append(line)
            line = token
        else:
            line = candidate
    return lines + ([line] if line else [])


def normalize(text: str, *, keep_spaces: bool) -> str:
    """Whitespace runs to one space (or removed), full-width punctuation to ASCII where the
    recogniser mixes the two."""
    text = text.translate(str.maketrans({"，": ",", "。": ".", "：": ":", "；": ";", "（": "(", "）": ")",
                                         "！": "!", "？": "?"}))
    return re.sub(r"\s+", " " if keep_spaces else "", text).strip()


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance (insertions + deletions + substitutions) over the reference length."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    previous = list(range(len(hypothesis) + 1))
    for i, ref_ch in enumerate(reference, 1):
        current = [i]
        for j, hyp_ch in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_ch != hyp_ch)))
        previous = current
    return previous[-1] / len(reference)
