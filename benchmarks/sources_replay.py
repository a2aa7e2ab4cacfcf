"""Replay rules that read one source instead of several when the ranking singles out its top
hit, on two `rag eval --answers` runs of the same sample: FULL reads the configured number of
sources (its rows keep the ranking, `ranking`), ONE reads only the first (`RAG_CONTEXT_TOP_N=1`).
Greedy decoding makes each question's answer a function of what the model reads, so a rule's
result is, per question, ONE's row where the rule fires and FULL's elsewhere.

    python benchmarks/sources_replay.py FULL/answers.jsonl ONE/answers.jsonl [--ratios 1.01,1.02,1.05]

The rules are those of the `context_single` setting (rag/single_source.py), on FULL's ranking:
`agree` (every list that found the top hit ranked it first), `ratio>=R` (the top score is at
least R times the second's) and `agree+ratio>=R`, plus `off` (FULL itself) and `always` (ONE).
Each gets accuracy, refusals, wrong answers, how often it fired, and the paired bootstrap 95%
interval of its accuracy minus FULL's. Choose a rule on a dev half; report it on a test half."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.answers_compare import load  # noqa: E402
from eval.metrics import paired_bootstrap  # noqa: E402
from rag.single_source import SingleRule  # noqa: E402


def top_score(hit: dict) -> float:
    return hit["rerank_score"] if hit.get("rerank_score") is not None else hit["score"]


def fires(rule: SingleRule | None, ranking: list[dict]) -> bool:
    """`SingleRule.fires` on a row's recorded ranking (never for "off" or an empty ranking)."""
    if rule is None or not ranking:
        return False
    second = top_score(ranking[1]) if len(ranking) > 1 else None
    return rule.fires(list(ranking[0]["ranks"].values()), top_score(ranking[0]), second)


def rules(ratios: list[float]) -> dict[str, SingleRule | None]:
    """The rules replayed: off, always (a rule with no condition), agree, and ratio>=R and
    agree+ratio>=R for each R."""
    names = ["agree", *(f"{prefix}ratio>={value:g}" for value in ratios for prefix in ("", "agree+"))]
    return {"off": None, "always": SingleRule(), **{name: SingleRule.parse(name) for name in names}}


def replay(full: dict[str, dict], one: dict[str, dict], ratios: list[float]) -> list[dict]:
    """One result row per rule over the questions both runs hold (FULL's rows must keep `ranking`)."""
    qids = sorted(set(full) & set(one))
    if not qids:
        raise SystemExit("no question in common")
    if any("ranking" not in full[q] for q in qids):
        raise SystemExit("the first run's rows keep no ranking: rerun it with this version of rag eval")
    base = [full[q]["accuracy"] for q in qids]
    out = []
    for name, rule in rules(ratios).items():
        fired = [fires(rule, full[q]["ranking"]) for q in qids]
        rows = [one[q] if f else full[q] for q, f in zip(qids, fired, strict=True)]
        accuracy = [r["accuracy"] for r in rows]
        b = paired_bootstrap(base, accuracy)
        out.append({"rule": name, "n": len(qids), "fired": sum(fired), "accuracy": statistics.mean(accuracy),
                    "refused": statistics.mean(float(r["refused"]) for r in rows),
                    "wrong": statistics.mean(float(not r["refused"] and r["accuracy"] < 1) for r in rows),
                    "delta": b["mean"], "low": b["low"], "high": b["high"],
                    "wtl": f"{b['wins']}/{b['ties']}/{b['losses']}"})
    return out


def table(results: list[dict]) -> str:
    lines = ["| rule | n | one source read | accuracy | refused | wrong | Δ accuracy vs full [95 %] (w/t/l) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['rule']} | {r['n']} | {r['fired']} | {r['accuracy']:.3f} | {r['refused']:.3f} | "
                     f"{r['wrong']:.3f} | {r['delta']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] ({r['wtl']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("full", type=Path)
    parser.add_argument("one", type=Path)
    parser.add_argument("--ratios", default="1.01,1.017,1.02,1.03,1.05")  # fused scores: first/second < 1.06
    args = parser.parse_args()
    ratios = [float(v) for v in args.ratios.split(",") if v.strip()]
    print(table(replay(load(args.full), load(args.one), ratios)))


if __name__ == "__main__":
    main()
