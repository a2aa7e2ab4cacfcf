"""Learning the fusion's α from verified answers, end to end (docs/benchmarks.md, "Fusion"):

    python -m benchmarks.fusion_learning --data-dir ~/.rag --dataset ../shared/eval/rgb_zh_refine --answers 100

Answers the first `--answers` questions of the dev half (`benchmarks.fusion.split`, seed 13)
through the real answer path — the configured LLM, the citation verifier — with a fresh
`FusionLearner` in `runs/fusion-learning/<dataset>` (the knowledge base's own learnt state is not
touched), printing the learnt α every 10 answers; then scores the test half at the learnt α and at
the configured one on the lists `benchmarks/fusion.py fetch` cached (`--lists`), with paired
bootstrap intervals against the configured α and against dense alone."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fusion import METRICS, bootstrap, evaluate_ranker, load, single, split  # noqa: E402
from benchmarks.fusion_eval import by_convex  # noqa: E402
from eval.datasets import load_dataset  # noqa: E402
from eval.runner import eval_kb_name  # noqa: E402
from rag.factory import build_services  # noqa: E402
from rag.fusion_learning import FusionLearner  # noqa: E402
from rag.settings import load_settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".rag")
    parser.add_argument("--kb-prefix", default="eval")
    parser.add_argument("--lists", type=Path, default=Path("runs/fusion/lists"))
    parser.add_argument("--answers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    name = Path(args.dataset).name
    dataset = load_dataset(args.dataset, keep_text="judged")
    settings = load_settings(data_dir=args.data_dir)
    services = build_services(settings)
    folder = Path("runs/fusion-learning") / name
    learner = FusionLearner(folder, settings.fusion_alpha)
    services.pipeline.retrieval.learner = learner
    kb = eval_kb_name(args.kb_prefix, name, settings)
    collection = services.kbs.open(kb).collection
    learner.forget(collection)
    dev, _ = split(dataset.sample(None), args.seed)
    asked = sorted(dev)[: args.answers]
    started, answered, verified = time.perf_counter(), 0, 0
    trail = []
    try:
        for i, qid in enumerate(asked, 1):
            answer = services.pipeline.answer(dataset.queries[qid], kb)
            answered += not answer.refused
            verified += any(c.supported for c in answer.citations)
            if i % 10 == 0:
                learned = learner.alpha(collection)
                trail.append(f"{i}: {learned.alpha:g}")
                print(f"{i} answers ({answered} not refused, {verified} with a verified citation, "
                      f"{learner.kept(collection)} kept, {time.perf_counter() - started:.0f} s): α {learned.alpha:g}",
                      flush=True)
    finally:
        services.close()
    learned = learner.alpha(collection)
    data = load(name, args.data_dir, args.lists)
    _, test = split([q.qid for q in data.queries], args.seed)
    rows = {"dense": single("dense"), "bm25": single("bm25"), f"convex α {settings.fusion_alpha:g} (configured)":
            by_convex(settings.fusion_alpha), f"convex α {learned.alpha:g} (learnt from {learned.answers})":
            by_convex(learned.alpha)}
    scores = {label: evaluate_ranker(data, ranker, test) for label, ranker in rows.items()}
    mine = scores[list(rows)[-1]]
    print(f"\n{name}: {len(asked)} dev answers in {time.perf_counter() - started:.0f} s, {answered} not refused, "
          f"{verified} with a verified citation; α trail: {'; '.join(trail)}\n")
    print(f"| {name}, test half ({len(test)} q) | MRR@10 | nDCG@10 | learnt − row, MRR@10 | learnt − row, nDCG@10 |")
    print("|---|---:|---:|---:|---:|")
    for label, res in scores.items():
        cells = []
        for m in METRICS:
            diff = mine[m] - res[m]
            lo, hi = bootstrap(diff)
            cells.append(f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {label} | {res['mrr@10'].mean():.3f} | {res['ndcg@10'].mean():.3f} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
