"""Per-kind counts of a `rag eval eval/data/versions --answers` run (issue 35): of the questions about
the current rule, how many answers state it; of those naming an older version, how many state the
older rule; of the unrelated ones, how many carry a version note where none belongs.

    rag eval eval/data/versions --answers --compare hybrid --out RUN
    python benchmarks/versions_report.py RUN [RUN_BEFORE]

Prints a Markdown table (one column per run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "eval" / "data" / "versions" / "queries.jsonl"
NOTES = ("Version used", "使用的版本")
ROWS = [("current", "contains", "current rule: the answer states it"),
        ("older", "contains", "names an older version: the answer states the older rule"),
        ("unrelated", "note", "unrelated: a version note where none belongs"),
        ("*", "refused", "refused (all questions)")]


def counts(run: Path) -> dict[str, dict[str, int]]:
    kinds = {row["_id"]: row["kind"] for row in map(json.loads, QUERIES.read_text(encoding="utf-8").splitlines())}
    out: dict[str, dict[str, int]] = {}
    for line in (run / "answers.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for kind in (kinds[row["qid"]], "*"):
            seen = out.setdefault(kind, {"n": 0, "contains": 0, "note": 0, "refused": 0})
            seen["n"] += 1
            seen["contains"] += bool(row.get("contains"))
            seen["note"] += any(note in (row.get("answer") or "") for note in NOTES)
            seen["refused"] += bool(row.get("refused"))
    return out


def main(runs: list[str]) -> None:
    if not runs:
        sys.exit(__doc__)
    tables = [counts(Path(r)) for r in runs]
    print("| question kind | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for kind, key, label in ROWS:
        cells = [f"{t.get(kind, {}).get(key, 0)}/{t.get(kind, {}).get('n', 0)}" for t in tables]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
