"""Per-knowledge-base calibration of the fusion's α, measured on the cached lists of
`benchmarks/fusion.py` (docs/benchmarks.md, "Fusion"):

    python -m benchmarks.fusion_calibration pseudo --data-dir ~/.rag --kb-prefix eval --lists runs/fusion/lists \\
        --kind crop|llm --n 150 cmrc2018 covidqa rgb_zh_refine rgb_zh_int
    python -m benchmarks.fusion_calibration report --data-dir runs/fusion [--kind crop|llm]

- `pseudo`: pseudo-questions for a sample of a knowledge base's chunks (seed 0), each with its
  source chunk as the one positive: a cropped sentence of the chunk (`crop`), or a question the
  configured LLM writes for it (`llm`); their dense and BM25 lists are cached beside the dataset's
  as `<name>.pseudo-<kind>.json`;
- `report`: per dataset, the α of the convex fusion that the pseudo-questions pick against the
  one the real questions pick, then learning from use simulated with the real judgements standing
  in for the citation verifier's: α re-chosen on the labels of the first n dev questions (30 draws
  each), scored on the test half; and with the verifier's bias (a question labels only the relevant
  chunks in the top 5 of the fusion in use, α re-chosen every 10 questions from 0.4)."""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fusion import (DATASETS, METRICS, Data, Query, add_source_args, evaluate_ranker, lists_dir,  # noqa: E402
                               load, query_from_row, score, split)
from benchmarks.fusion_data import both_lists, scored_pairs  # noqa: E402
from benchmarks.fusion_eval import by_convex  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")
PROMPT = {"en": ("You write one question that the passage answers, the way a user searching these documents would "
                 "ask it. Do not copy long phrases from the passage. Reply with the question only.", "Passage: ",
                 "\n\nQuestion:"),
          "zh": ("你为这段文字写一个它能回答的问题，像用户在这些文档中搜索时那样提问。不要照抄原文的长句。只输出这个问题。",
                 "段落：", "\n\n问题：")}
GRID = [round(0.1 * i, 1) for i in range(2, 9)]  # 0.2 .. 0.8


def _words(text: str) -> int:
    return len(CJK.findall(text)) + len(re.findall(r"[A-Za-z0-9]+", text))


def pseudo(name: str, data_dir: Path, lists: Path, kb_prefix: str, kind: str, n: int) -> Path:
    from eval.runner import eval_kb_name
    from rag.factory import build_services
    from rag.settings import load_settings
    from rag.text import split_sentences

    settings = load_settings(data_dir=data_dir)
    services = build_services(settings)
    try:
        kb = services.kbs.open(eval_kb_name(kb_prefix, Path(name).name, settings))
        rng = random.Random(0)
        sample = rng.sample(sorted(kb.live_ids()), min(kb.count(), 2 * n))
        chunks = kb.get_chunks(sample)
        questions: list[tuple[str, str]] = []
        started = time.perf_counter()
        for cid in sample:
            text = chunks[cid].text if cid in chunks else ""
            if kind == "crop":
                sentences = [text[a:b].strip() for a, b in split_sentences(text)]
                pool = [s for s in sentences if 8 <= _words(s) <= 60] or [s for s in sentences if s]
                question = rng.choice(pool) if pool else ""
            else:
                system, before, after = PROMPT["zh" if len(CJK.findall(text)) > 0.2 * len(text) else "en"]
                reply = services.llm.chat([{"role": "system", "content": system},
                                           {"role": "user", "content": before + text[:1200] + after}],
                                          max_tokens=48, temperature=0.0)
                question = (reply.strip().splitlines() or [""])[0].strip()
            if question:
                questions.append((cid, question))
            if len(questions) >= n:
                break
        seconds = time.perf_counter() - started
        rows = [{"qid": cid, "question": question, "dense": scored_pairs(dense), "bm25": scored_pairs(bm25)}
                for (cid, question), (dense, bm25) in zip(questions, both_lists(kb, [q for _, q in questions]))]
    finally:
        services.close()
    out = lists / f"{Path(name).name}.pseudo-{kind}.json"
    out.write_text(json.dumps({"dataset": name, "kind": kind, "seconds": seconds, "queries": rows}, ensure_ascii=False))
    print(f"{name}: {len(rows)} {kind} pseudo-questions in {seconds:.0f} s, e.g. {rows[0]['question']!r}")
    return out


def load_pseudo(path: Path) -> Data:
    raw = json.loads(path.read_text())
    return Data(raw["dataset"], "answer", {}, [query_from_row(r, {r["qid"]}, 1) for r in raw["queries"]])


def best_alpha(data: Data, qids: set[str] | None = None) -> tuple[float, float]:
    """(α of GRID with the best MRR@10 + nDCG@10, that MRR@10); ties go to the α nearer 0.4."""
    means = {a: {m: float(x.mean()) for m, x in evaluate_ranker(data, by_convex(a), qids).items()} for a in GRID}
    a = max(GRID, key=lambda a: (means[a]["mrr@10"] + means[a]["ndcg@10"], -abs(a - 0.4)))
    return a, means[a]["mrr@10"]


def report(names: Sequence[str], data_dir: Path, lists: Path, kind: str, seed: int = 13) -> str:
    lines = [f"| set | real questions: best α (MRR@10) | {kind} pseudo-questions: best α (MRR@10), n |", "|---|---|---|"]
    datas = {n: load(n, data_dir, lists) for n in names}
    for name, data in datas.items():
        path = lists / f"{name}.pseudo-{kind}.json"
        fake = load_pseudo(path) if path.is_file() else None
        real_a, real_m = best_alpha(data)
        if fake is not None:
            fake_a, fake_m = best_alpha(fake)
        cell = f"{fake_a:.1f} ({fake_m:.3f}), {len(fake.queries)}" if fake is not None else "–"
        lines.append(f"| {name} | {real_a:.1f} ({real_m:.3f}) | {cell} |")
    lines += ["", "| set | labels from n dev questions: test MRR@10 / nDCG@10 (mean α) | with the verifier's bias, "
              "100 questions: final α of 5 draws | fixed α 0.4 |", "|---|---|---|---|"]
    for name, data in datas.items():
        dev, test = split([q.qid for q in data.queries], seed)
        by_id = {q.qid: q for q in data.queries}
        ranked = {a: {q.qid: by_convex(a)(data, q) for q in data.queries} for a in GRID}
        scores = {a: {q: score(data, by_id[q], ranked[a][q]) for q in by_id} for a in GRID}
        on_test = {a: [float(np.mean([scores[a][t][m] for t in test])) for m in METRICS] for a in GRID}
        cells = []
        for n in (10, 25, 50):
            if n > len(dev):
                continue
            picks = []
            for draw in range(30):
                chosen = random.Random(draw).sample(sorted(dev), n)
                picks.append(max(GRID, key=lambda a: (np.mean([scores[a][q]["mrr@10"] + scores[a][q]["ndcg@10"]
                                                               for q in chosen]), -abs(a - 0.4))))
            mrr, ndcg = np.mean([on_test[a] for a in picks], axis=0)
            cells.append(f"n {n}: {mrr:.3f} / {ndcg:.3f} ({np.mean(picks):.2f})")

        def relevant(q: Query, cid: str) -> bool:
            return (data.chunk_doc.get(cid, cid) if data.level == "doc" else cid) in q.relevant
        finals = []
        for draw in range(5):
            alpha, labels = 0.4, []
            for i, qid in enumerate(random.Random(draw).sample(sorted(dev), min(len(dev), 100)), 1):
                found = {c for c in ranked[alpha][qid][:5] if relevant(by_id[qid], c)}
                if found:
                    labels.append((qid, found))
                if i % 10 == 0 and len(labels) >= 10:
                    alpha = max(GRID, key=lambda a: (np.mean([max(1 / (ranked[a][q].index(c) + 1) for c in cs)
                                                              for q, cs in labels]), -abs(a - 0.4)))
            finals.append(alpha)
        fixed = on_test[0.4]
        lines.append(f"| {name} | {'; '.join(cells)} | {', '.join(f'{a:.1f}' for a in finals)} | "
                     f"{fixed[0]:.3f} / {fixed[1]:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pseudo")
    p.add_argument("datasets", nargs="+")
    add_source_args(p)
    p.add_argument("--kind", choices=("crop", "llm"), default="crop")
    p.add_argument("--n", type=int, default=150)
    r = sub.add_parser("report")
    r.add_argument("--datasets", default=",".join(DATASETS))
    add_source_args(r, kb_prefix=False)
    r.add_argument("--kind", choices=("crop", "llm"), default="llm")
    args = parser.parse_args(argv)
    lists = lists_dir(args)
    if args.cmd == "pseudo":
        for name in args.datasets:
            pseudo(name, args.data_dir, lists, args.kb_prefix, args.kind, args.n)
    else:
        print(report(args.datasets.split(","), args.data_dir, lists, args.kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
