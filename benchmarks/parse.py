"""Parse benchmark: generated large files (a 50 MB text file, a 10 MB Markdown file, a 10 MB CSV)
read and parsed the way `rag ingest` does (one read, `parse_bytes`, then the configured chunker),
each in a fresh process so that its peak RSS is its own. The parse cost is compared with the time
the bundled embedder would need for the same file's chunks (encode of a 64-chunk sample,
extrapolated). Targets (issue 11): parse <= 10 % of the embedding time, RSS <= 2x the file size
above the baseline.

    python benchmarks/parse.py [--text-mb 50] [--md-mb 10] [--csv-mb 10] [--sample 64] [--embed-model auto]

Prints one JSON line per file and a Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 1024 * 1024
_WORDS = ("the of and to in is was for on that with as by at from this be are it an or which kettle warranty "
          "battery model system results method data heating element lid hinge descale citric acid").split()


def _paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(30, 120))).capitalize() + "."


def generate(kind: str, path: Path, mb: float) -> None:
    """Deterministic prose (text: a heading every 10 paragraphs; md: sections, lists, code; csv: rows)."""
    rng = random.Random(11)
    target, size, i = int(mb * MIB), 0, 0
    with open(path, "w", encoding="utf-8") as out:
        if kind == "csv":
            out.write("id,product,question,answer\n")
        while size < target:
            if kind == "txt":
                piece = (f"Section {i}" if i % 10 == 0 else _paragraph(rng)) + "\n\n"
            elif kind == "md":
                piece = (f"## Part {i}\n\n" if i % 10 == 0 else
                         f"- item {i}\n- item {i + 1}\n\n" if i % 10 == 5 else
                         f"```\ncode {i}\n```\n\n" if i % 10 == 7 else _paragraph(rng) + "\n\n")
            else:
                piece = f'{i},Kettle {i % 97},"{_paragraph(rng)[:120]}?","{_paragraph(rng)[:200]}"\n'
            out.write(piece)
            size += len(piece.encode())
            i += 1


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the resident set every 2 ms (ru_maxrss would include the warm-up's peak)."""

    def __init__(self) -> None:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def measure_one(path: Path, sample: int, embed_model: str) -> dict:
    """Runs in its own process: read + parse + chunk one file, then time the embedder on a sample."""
    from ingest.chunkers import make_chunker
    from ingest.parse import parse_bytes
    from rag.settings import load_settings

    settings = load_settings()
    chunker = make_chunker("recursive", size=settings.chunk_size, overlap=settings.chunk_overlap)
    warm = path.with_name("warm" + path.suffix)
    warm.write_bytes(path.read_bytes()[:20_000].rsplit(b"\n", 1)[0])
    chunker.split(parse_bytes(warm.read_bytes(), path.suffix, warm.name))  # imports, lazy loads
    baseline = _rss()
    with PeakRss() as parse_peak:
        t0 = time.perf_counter()
        data = path.read_bytes()
        doc = parse_bytes(data, path.suffix, path.name)
        parse_s = time.perf_counter() - t0
        del data
    with PeakRss() as chunk_peak:
        t0 = time.perf_counter()
        spans = chunker.split(doc)
        chunk_s = time.perf_counter() - t0
    size = path.stat().st_size
    result = {"file": path.name, "mb": round(size / MIB, 1), "parser": doc.metadata.get("parser", "default"),
              "blocks": len(doc.blocks), "chunks": len(spans), "parse_s": round(parse_s, 2),
              "parse_mb_s": round(size / MIB / parse_s, 1), "chunk_s": round(chunk_s, 2),
              "parse_rss_mb": round((parse_peak.peak - baseline) / MIB, 1),
              "parse_rss_x": round((parse_peak.peak - baseline) / size, 2),
              "chunk_rss_mb": round((chunk_peak.peak - baseline) / MIB, 1)}
    texts = [s.embed_text or s.text for s in spans[:: max(len(spans) // sample, 1)][:sample]]
    del doc, spans
    from rag.factory import build_services

    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(load_settings(data_dir=Path(tmp), embed_model=embed_model))
        embedder = services.embedder
        embedder.encode_corpus(texts[:4])  # load the model outside the timing
        t0 = time.perf_counter()
        embedder.encode_corpus(texts)
        per_chunk = (time.perf_counter() - t0) / len(texts)
        result["embedder"] = embedder.name
        services.close()
    result["embed_chunks_s"] = round(1 / per_chunk, 1)
    result["embed_est_s"] = round(per_chunk * result["chunks"], 1)
    result["parse_pct_of_embed"] = round(100 * (parse_s + chunk_s) / result["embed_est_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-mb", type=float, default=50)
    parser.add_argument("--md-mb", type=float, default=10)
    parser.add_argument("--csv-mb", type=float, default=10)
    parser.add_argument("--sample", type=int, default=64)
    parser.add_argument("--embed-model", default="auto")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.sample, args.embed_model)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, mb in (("txt", args.text_mb), ("md", args.md_mb), ("csv", args.csv_mb)):
            if mb <= 0:
                continue
            path = Path(tmp) / f"big.{kind}"
            generate(kind, path, mb)
            out = subprocess.run([sys.executable, __file__, "--one", str(path), "--sample", str(args.sample),
                                  "--embed-model", args.embed_model], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
            path.unlink()
    print("\n| file | MB | parser | parse s | MB/s | chunk s | parse RSS MB (x file) | chunks | embed est. s "
          "(chunks/s) | parse+chunk % of embed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['mb']} | {r['parser']} | {r['parse_s']} | {r['parse_mb_s']} | {r['chunk_s']} | "
              f"{r['parse_rss_mb']} ({r['parse_rss_x']}x) | {r['chunks']} | {r['embed_est_s']} "
              f"({r['embed_chunks_s']}) | {r['parse_pct_of_embed']} |")


if __name__ == "__main__":
    main()
