"""A multi-positive answer set with same-topic hard negatives, built from a shipped dataset.

    python benchmarks/multi_positive.py cmrc2018 --docs 100 --out runs/multi-positive/cmrcwin-100
    rag eval runs/multi-positive/cmrcwin-100 --compare hybrid --answers --split test --limit 100 --seed 0

Every document of the draw is cut into overlapping windows of `--width` sentences (stride 1,
`benchmarks/fusion_data.windows`); each window is one passage with its document's title. A
question's positives are the windows that hold one of its gold answer spans, so most questions
have two or three, and the other windows of the same document are hard negatives on the same
topic, sharing the question's words. answers.jsonl names, per positive window, the gold spans it
holds. This is the shape of the news QA sets the answer issue was found on (several relevant
passages among same-topic negatives); the shipped CMRC 2018 and COVID-QA sets have one relevant
passage per question. CMRC paragraphs are drawn with `--seed`; COVID-QA takes the `--docs`
papers with the most questions per character (long papers make thousands of windows)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fusion_data import windows  # noqa: E402
from eval.datasets import load_dataset  # noqa: E402


def build(dataset: str, docs: int, width: int, seed: int, out: Path) -> dict[str, int]:
    """Write the set to `out` (a BEIR folder with answers.jsonl); its counts."""
    windows(load_dataset(dataset), docs, seed, width, out, densest=dataset == "covidqa", with_answers=True)
    passages = sum(1 for _ in (out / "corpus.jsonl").open(encoding="utf-8"))
    queries = sum(1 for _ in (out / "queries.jsonl").open(encoding="utf-8"))
    positives = sum(1 for _ in (out / "qrels.tsv").open(encoding="utf-8")) - 1
    return {"passages": passages, "queries": queries, "positives": positives}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=("cmrc2018", "covidqa"))
    p.add_argument("--docs", type=int, default=100, help="documents drawn (CMRC paragraphs, COVID-QA papers)")
    p.add_argument("--width", type=int, default=3, help="sentences per window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.docs < 1 or args.width < 1:
        p.error("--docs and --width must be at least 1")
    counts = build(args.dataset, args.docs, args.width, args.seed, args.out)
    print(json.dumps({"folder": str(args.out), **counts,
                      "positives_per_query": round(counts["positives"] / max(1, counts["queries"]), 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
