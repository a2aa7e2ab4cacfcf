"""What the answer check's coverage gate (`RAG_ANSWER_MIN_COVERAGE`, rag/answer_check.py
`question_coverage`: the cited sources must be about the question) does to finished
`rag eval --answers` (answers.jsonl) or `rag eval --robustness` (per_query.jsonl) runs.

    # a run made with the gate on: the run as it is, against the same run with the answers the
    # gate refused given back (their refused text is kept in the row) and scored
    python benchmarks/answer_gate.py RUN/answers.jsonl [MORE.jsonl ...]

    # runs made without the gate: each answered row's coverage recomputed from the sources it
    # recorded (texts from the dataset's corpus; titles from the knowledge base's catalog with
    # --kb, as the pipeline saw them; robustness passages carry the corpus titles), per threshold
    python benchmarks/answer_gate.py RUN/answers.jsonl --dataset NAME --recompute --kb KB --thresholds 0.4,0.5,0.6

`--split dev|test --dataset NAME` keeps the rows of one half (seed 0, as `rag eval --split`): choose the
threshold on dev, report test. Greedy decoding makes the gate's effect exact: it only turns an
answered row into a refusal. Rows are grouped by kind: answers, noise ratio, rejection."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.datasets import corpus_file_name, load_dataset, split_ids  # noqa: E402
from eval.metrics import answer_accuracy, paired_bootstrap  # noqa: E402
from rag.answer_check import question_coverage  # noqa: E402
from rag.types import Source  # noqa: E402

GATE_REASON = "question_not_covered"


def load_rows(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines() if line]


def group(row: dict) -> str:
    if row.get("test") == "rejection":
        return "rejection (noise only)"
    if row.get("test") == "noise":
        return f"noise ratio {row['ratio']}"
    return "answers (retrieved)"


def refused_text(row: dict) -> str | None:
    """The text a refused row had before its refusal (answers rows: `refused_answer`,
    robustness rows: `unsupported_answer`)."""
    return row.get("refused_answer") or row.get("unsupported_answer")


def without_gate(row: dict) -> tuple[float, bool]:
    """(accuracy, refused) of the row had the coverage gate not refused it."""
    check = row.get("answer_check") or {}
    text = refused_text(row)
    if row["refused"] and check.get("reason") == GATE_REASON and text:
        return answer_accuracy(text, row.get("gold") or [], row.get("all_of") or []), False
    return float(row["accuracy"]), bool(row["refused"])


def summary(name: str, scored: Sequence[tuple[float, bool]]) -> dict[str, float]:
    n = len(scored)
    return {"config": name, "n": n, "accuracy": sum(a for a, _ in scored) / n,
            "refusal rate": sum(r for _, r in scored) / n,
            "wrong answers": sum(1 for a, r in scored if not r and a < 1) / n}


def wrong(scored: Sequence[tuple[float, bool]]) -> list[float]:
    return [float(not r and a < 1) for a, r in scored]


def table(out: list[str], title: str, on: list[tuple[float, bool]], off: list[tuple[float, bool]],
          on_name: str) -> None:
    out += [f"### {title}", "", "| config | n | accuracy | refusal rate | wrong answers |", "|---|---:|---:|---:|---:|"]
    for s in (summary("gate off", off), summary(on_name, on)):
        out.append(f"| {s['config']} | {s['n']} | {s['accuracy']:.3f} | {s['refusal rate']:.3f} | "
                   f"{s['wrong answers']:.3f} |")
    acc = paired_bootstrap([a for a, _ in off], [a for a, _ in on])
    bad = paired_bootstrap(wrong(off), wrong(on))
    out += ["", f"{on_name} − gate off (paired bootstrap 95%): accuracy {acc['mean']:+.3f} "
            f"[{acc['low']:+.3f}, {acc['high']:+.3f}], wrong answers {bad['mean']:+.3f} "
            f"[{bad['low']:+.3f}, {bad['high']:+.3f}]", ""]


def as_run(rows: Sequence[dict]) -> str:
    out: list[str] = []
    by_group: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_group[group(row)].append(row)
    for name, members in sorted(by_group.items()):
        on = [(float(r["accuracy"]), bool(r["refused"])) for r in members]
        table(out, name, on, [without_gate(r) for r in members], "gate on (as run)")
    return "\n".join(out)


class SourceTexts:
    """Rebuilds the sources a row recorded (doc_id, start, end) as the pipeline showed them."""

    def __init__(self, dataset: str, kb: str | None) -> None:
        self.corpus = load_dataset(dataset).corpus
        self.titles: dict[str, str] = {}
        if kb:
            from rag.catalog import Catalog
            from rag.settings import Settings

            catalog = Catalog(Settings().data_dir / "catalog.sqlite")
            try:
                self.titles = {d.source: d.title or "" for d in catalog.list_docs(kb)}
            finally:
                catalog.close()

    def sources(self, row: dict) -> list[Source]:
        robustness = "passages" in row  # the robustness harness shows the corpus titles
        out = []
        for number, ref in enumerate(row.get("passages") or row.get("sources") or [], 1):
            doc = self.corpus[ref["doc_id"]]
            name = corpus_file_name(doc.id)
            title = doc.title if robustness else self.titles.get(name, "")
            out.append(Source(number, f"s{number}", doc.id, name, title, (), None, ref["start"], ref["end"],
                              doc.text[ref["start"]:ref["end"]], 0.0))
        return out


def cited_numbers(row: dict) -> set[int]:
    """The source numbers the answer stands on: its supported citations when the row says
    which are (robustness rows), else every cited number."""
    cited = row.get("cited") or []
    if cited and isinstance(cited[0], dict):
        supported = {c["number"] for c in cited if c.get("supported")}
        return supported or {c["number"] for c in cited}
    return set(cited)


def recompute(rows: Sequence[dict], texts: SourceTexts, thresholds: Sequence[float]) -> str:
    out: list[str] = []
    by_group: dict[str, list[tuple[dict, float | None]]] = defaultdict(list)
    for row in rows:
        coverage = None
        if not row["refused"]:
            sources = texts.sources(row)
            numbers = cited_numbers(row)
            coverage = question_coverage(row["question"], sources,
                                         [s for s in sources if s.number in numbers] or sources)
        by_group[group(row)].append((row, coverage))
    for name, members in sorted(by_group.items()):
        off = [(float(r["accuracy"]), bool(r["refused"])) for r, _ in members]
        for threshold in thresholds:
            on = [(a, refused or (cov is not None and cov < threshold))
                  for (a, refused), (_, cov) in zip(off, members, strict=True)]
            on = [(0.0 if r else a, r) for a, r in on]
            table(out, f"{name}, min coverage {threshold}", on, off, f"gate {threshold}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--dataset", help="the runs' dataset (name or BEIR folder): for --split and --recompute")
    parser.add_argument("--recompute", action="store_true", help="runs made without the gate: recompute coverage")
    parser.add_argument("--kb", help="with --recompute: the eval knowledge base whose catalog titles to use")
    parser.add_argument("--thresholds", default="0.5")
    parser.add_argument("--split", default="all", choices=["all", "dev", "test"])
    args = parser.parse_args()
    if (args.recompute or args.split != "all") and not args.dataset:
        parser.error("--recompute and --split need --dataset")
    rows = load_rows(args.runs)
    if args.split != "all":  # the halves of every evaluable query, as `rag eval --split` makes them
        half = set(split_ids(load_dataset(args.dataset).evaluable(), args.split))
        rows = [r for r in rows if r["qid"] in half]
    if not rows:
        raise SystemExit("no rows")
    if args.recompute:
        thresholds = [float(t) for t in args.thresholds.split(",")]
        print(recompute(rows, SourceTexts(args.dataset, args.kb), thresholds))
    else:
        print(as_run(rows))


if __name__ == "__main__":
    main()
