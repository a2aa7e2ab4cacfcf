"""OCR benchmark: seconds per page and peak RSS for a full A4 text page (English, 11 pt) scanned
at 150 and 300 dpi, through the same path as ingestion (an image-only PDF rendered by PDFium,
prepared, recognised by the bundled PP-OCRv4 models, laid out), plus the character error rate of
the known English and Chinese paragraphs at both resolutions.

    python benchmarks/ocr.py [--pages 3] [--json out.json]

Each dpi runs in its own process, so peak RSS is that of one configuration (models included).
The first page of each run is a warm-up and not timed. CPU seconds (user + system of the process)
are reported beside wall seconds: on a machine shared with other jobs the wall time is inflated
by waiting for a core, the CPU time much less."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.ocr_samples import (EN_PARAGRAPH, ZH_PARAGRAPH, character_error_rate, cjk_font, latin_font,  # noqa: E402
                              normalize, render_text)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def a4_page_pdf(folder: Path, dpi: int) -> tuple[Path, str]:
    """An image-only A4 PDF page filled with English paragraphs at `dpi`, and its text."""
    from PIL import Image

    text = " ".join([EN_PARAGRAPH] * 6)
    body = render_text(text, latin_font(), dpi, width_in=6.27, margin_in=1.0)
    page = Image.new("L", (round(8.27 * dpi), round(11.69 * dpi)), 255)
    page.paste(body.crop((0, 0, body.width, min(body.height, page.height))), (0, 0))
    path = folder / f"a4-{dpi}.pdf"
    page.convert("RGB").save(path, "PDF", resolution=dpi)
    return path, text


def run_one(dpi: int, pages: int) -> dict:
    from ingest.formats.ocr import OcrOptions
    from ingest.formats.pdf import parse_pdf

    with tempfile.TemporaryDirectory() as tmp:
        path, text = a4_page_pdf(Path(tmp), dpi)
        data = path.read_bytes()
        options = OcrOptions()
        parse_pdf(data, "pdf", "warm-up", ocr=options)  # loads the models
        seconds, cpu, cer = [], [], []
        for _ in range(pages):
            started, cpu_started = time.perf_counter(), time.process_time()
            doc = parse_pdf(data, "pdf", "page", ocr=options)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            cer.append(character_error_rate(normalize(text, keep_spaces=True), normalize(doc.text, keep_spaces=True)))
    return {"dpi": dpi, "pages": pages, "seconds_per_page": round(statistics.median(seconds), 2),
            "min_seconds": round(min(seconds), 2), "max_seconds": round(max(seconds), 2),
            "cpu_seconds_per_page": round(statistics.median(cpu), 2),
            "cer_a4_en": round(statistics.fmean(cer), 4), "peak_rss_mb": round(peak_rss_mb())}


def cer_table() -> list[dict]:
    from ingest.formats.ocr import OcrOptions, read_page

    rows = []
    for lang, text, font in (("en", EN_PARAGRAPH, latin_font()), ("zh", ZH_PARAGRAPH, cjk_font())):
        if font is None:
            rows.append({"lang": lang, "skipped": "no CJK font installed"})
            continue
        for dpi in (150, 300):
            page = read_page(render_text(text, font, dpi), OcrOptions())
            row = {"lang": lang, "dpi": dpi, "seconds": round(page.seconds, 2), "confidence": round(page.confidence, 4)}
            for keep in (True, False) if lang == "en" else (False,):
                key = "cer" if keep or lang == "zh" else "cer_no_spaces"
                row[key] = round(character_error_rate(normalize(text, keep_spaces=keep),
                                                      normalize(page.text, keep_spaces=keep)), 4)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=3, help="timed pages per dpi")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one dpi
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.pages)))
        return
    results = {"cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()], "pages": []}
    for dpi in (150, 300):
        out = subprocess.run([sys.executable, __file__, "--one", str(dpi), "--pages", str(args.pages)],
                             capture_output=True, text=True, check=True)
        results["pages"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results["pages"][-1], file=sys.stderr)
    results["cer"] = cer_table()
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(results, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
