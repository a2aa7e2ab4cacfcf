"""Two `rag eval --answers` runs on the same sample, side by side: accuracy, contains-gold,
refusal rate, citation correctness, time to first token and total latency, with the paired
bootstrap 95% interval of each per-question difference (second minus first).

    python benchmarks/answers_compare.py RUN_A/answers.jsonl RUN_B/answers.jsonl [--names A,B]

A question missing from either file is left out (both runs must use the same --split, --limit
and --seed). Citation correctness is compared over the questions both runs answered."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.metrics import paired_bootstrap  # noqa: E402


def load(path: Path) -> dict[str, dict]:
    return {row["qid"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if row}


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def compare(first: dict[str, dict], second: dict[str, dict], names: tuple[str, str]) -> str:
    qids = sorted(set(first) & set(second))
    if not qids:
        raise SystemExit("no question in common")
    lines = [f"{len(qids)} questions in common", "",
             f"| name | accuracy | contains | refusal rate | citation correct | TTFT p50 s | total p50 s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, run in zip(names, (first, second), strict=True):
        rows = [run[q] for q in qids]
        cited = [r["citation_correct"] for r in rows if r["citation_correct"] is not None]
        ttft = [r["timings"]["ttft"] for r in rows if "ttft" in r.get("timings", {})]
        ttft_p50 = _p50(ttft)
        lines.append(f"| {name} | {statistics.mean(r['accuracy'] for r in rows):.3f} | "
                     f"{statistics.mean(r['contains'] or 0.0 for r in rows):.3f} | "
                     f"{statistics.mean(float(r['refused']) for r in rows):.3f} | "
                     f"{statistics.mean(cited) if cited else float('nan'):.3f} (n={len(cited)}) | "
                     f"{'-' if ttft_p50 is None else f'{ttft_p50:.2f}'} | "
                     f"{_p50([r['timings']['total'] for r in rows]):.2f} |")
    lines += ["", f"paired differences {names[1]} - {names[0]} (10,000 bootstrap resamples, 95% interval):", "",
              "| metric | n | mean | 95% CI | wins/ties/losses |", "|---|---:|---:|---|---|"]
    metrics = {"accuracy": lambda r: r["accuracy"], "contains": lambda r: r["contains"] or 0.0,
               "refused": lambda r: float(r["refused"])}
    for metric, value in metrics.items():
        b = paired_bootstrap([value(first[q]) for q in qids], [value(second[q]) for q in qids])
        lines.append(f"| {metric} | {b['n']} | {b['mean']:+.3f} | [{b['low']:+.3f}, {b['high']:+.3f}] | "
                     f"{b['wins']}/{b['ties']}/{b['losses']} |")
    both = [q for q in qids if first[q]["citation_correct"] is not None and second[q]["citation_correct"] is not None]
    if both:
        b = paired_bootstrap([first[q]["citation_correct"] for q in both], [second[q]["citation_correct"] for q in both])
        lines.append(f"| citation correct (both answered) | {b['n']} | {b['mean']:+.3f} | "
                     f"[{b['low']:+.3f}, {b['high']:+.3f}] | {b['wins']}/{b['ties']}/{b['losses']} |")
    timed = [q for q in qids if "ttft" in first[q].get("timings", {}) and "ttft" in second[q].get("timings", {})]
    if timed:
        ratio = _p50([second[q]["timings"]["ttft"] for q in timed]) / _p50([first[q]["timings"]["ttft"] for q in timed])
        lines.append(f"\nTTFT p50 ratio {names[1]}/{names[0]}: {ratio:.2f} over {len(timed)} questions")
    tokens = [(first[q].get("context_tokens"), second[q].get("context_tokens")) for q in qids]
    tokens = [(a, b) for a, b in tokens if a and b]
    if tokens:
        lines.append(f"context tokens (estimated) mean: {statistics.mean(a for a, _ in tokens):.0f} -> "
                     f"{statistics.mean(b for _, b in tokens):.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--names", default="first,second")
    args = parser.parse_args()
    names = tuple(n.strip() for n in args.names.split(","))
    if len(names) != 2:
        raise SystemExit("--names takes two comma-separated names")
    print(compare(load(args.first), load(args.second), names))


if __name__ == "__main__":
    main()
