"""Hostile files benchmark (issue 31): each case is a folder holding one hostile file and a small
good one, ingested by `rag ingest` in its own process (hash embedder, a fresh data dir) under a
wall-clock limit; the child's own peak RSS (os.wait4), its seconds, exit code, whether the good
file was indexed and what the report says of the hostile one.

    python benchmarks/hostile.py [--cases thin_png,thin_pdf,blank_pages,tall_xlsx,fifo] [--limit 300]
                                 [--tree PATH] [--out results.json]

Cases: a 4000x2 PNG (under 100 bytes); a PDF page with MediaBox [0 0 14400 1]; a PDF of 200 blank
14400x14400 pt pages; an XLSX whose sheet unpacks to 190 MB (about 27:1); a named pipe. Run from
the repository root: the file generators are the test suite's (tests/unit/ocr_fixtures.py,
tests/unit/fixtures_files.py). `--tree` runs the ingest of another checkout (e.g. a `git worktree` of
an older commit) on the same files, for before/after rows. Prints one JSON line per case and a
Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOOD = "notes.txt"


def _thin_png(folder: Path) -> str:
    from tests.unit.ocr_fixtures import thin_png

    (folder / "strip.png").write_bytes(thin_png(4000, 2))
    return "strip.png"


def _thin_pdf(folder: Path) -> str:
    from tests.unit.ocr_fixtures import drawn_pdf

    (folder / "thin.pdf").write_bytes(drawn_pdf([(14400, 1, "0 g 0 0 14400 1 re f")]))
    return "thin.pdf"


def _blank_pages(folder: Path) -> str:
    from tests.unit.ocr_fixtures import WHITE_PAGE, drawn_pdf

    size = 14400
    (folder / "blank.pdf").write_bytes(drawn_pdf([(size, size, WHITE_PAGE.format(w=size, h=size))] * 200))
    return "blank.pdf"


def _tall_xlsx(folder: Path) -> str:
    from tests.unit.fixtures_files import write_tall_xlsx

    return write_tall_xlsx(folder, "tall.xlsx", member_mb=190).name


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.txt")
    return "pipe.txt"


CASES: dict[str, Callable[[Path], str]] = {"thin_png": _thin_png, "thin_pdf": _thin_pdf,
                                           "blank_pages": _blank_pages, "tall_xlsx": _tall_xlsx, "fifo": _fifo}


def run_case(name: str, limit: float, work: Path, tree: Path = ROOT) -> dict:
    folder = work / name / "docs"
    folder.mkdir(parents=True)
    (folder / GOOD).write_text("The kettle's warranty lasts two years from the date of purchase.\n", encoding="utf-8")
    hostile = CASES[name](folder)
    size = 0 if name == "fifo" else (folder / hostile).stat().st_size
    env = {**os.environ, "RAG_DATA_DIR": str(work / name / "data"), "RAG_EMBED_MODEL": "hash",
           "RAG_RERANK_MODEL": "none"}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", str(folder), "--kb", "hostile", "--json"],
                             cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    timed_out = False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > limit:
            os.killpg(child.pid, signal.SIGKILL)
            timed_out = True
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    output = child.stdout.read().decode("utf-8", "replace") if child.stdout else ""
    report = _json(output)
    files = {f["source"].rsplit("/", 1)[-1]: f for f in report.get("files", [])}
    entry = files.get(hostile, {})
    return {"case": name, "bytes": size, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "timed_out": timed_out, "exit": None if timed_out else os.waitstatus_to_exitcode(status),
            "good_indexed": files.get(GOOD, {}).get("status") in ("indexed", "updated"),
            "hostile": f"{entry.get('status', '?')}: {entry.get('reason') or entry.get('note') or ''}"[:160]}


def _json(text: str) -> dict:
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--limit", type=float, default=300.0, help="seconds before a case is killed")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose `rag ingest` runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        for name in args.cases.split(","):
            row = run_case(name.strip(), args.limit, work, args.tree.resolve())
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| case | file | seconds | peak RSS | exit | good file indexed | the hostile file |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        took = f"> {args.limit:g} (killed)" if r["timed_out"] else f"{r['seconds']}"
        print(f"| {r['case']} | {r['bytes']:,} B | {took} | {r['peak_rss_mb']:,} MB | {r['exit']} | "
              f"{'yes' if r['good_indexed'] else 'no'} | {r['hostile']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
