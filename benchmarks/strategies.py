"""Answer strategies side by side on summary questions (issue 17): stuff, map_reduce, refine and
map_rerank over examples/docs and one long COVID-QA paper, with the real pipeline and the
configured LLM (the bundled embedded model by default).

Each question lists key points an answer that covers the document states (any alternative
counts); the table gives per strategy the share of key points found, the share of cited
sentences the verifier supports, refusals, LLM calls and latency. Strategies run in a shuffled
order per question (a fixed seed), in one process, sharing one model.

    python benchmarks/strategies.py [--strategies stuff,map_reduce,refine,map_rerank] [--out runs/strategies.json]

With `--dataset` the questions are a dataset's instead (a shipped name, covidqa or cmrc2018, or a
BEIR-layout folder), drawn from its dev or test half as `rag eval` draws them, over the same cached
evaluation knowledge base (`eval.runner.prepare_kb`), each answered and scored by
`eval.answer_eval.evaluate_answers`: per strategy the accuracy, citation correctness (the share of
answered questions whose cited spans contain a gold answer), refusals, LLM calls and p50 latency.
`--embedded small|large` sets RAG_LLM_EMBEDDED (which bundled model answers, and what `auto` picks).

    python benchmarks/strategies.py --dataset covidqa --split dev --limit 40 --seed 0 [--embedded large]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.report import markdown_table  # noqa: E402
from ingest.service import build_ingestor  # noqa: E402
from rag.citations import strip_markers  # noqa: E402
from rag.factory import build_services  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.text import normalize  # noqa: E402

KB = "strategies"
LONG_PAPER = "1581"  # "Estimating Sensitivity of Laboratory Testing for Influenza in Canada through Modelling"

QUESTIONS: list[tuple[str, list[list[str]]]] = [
    ("Summarise the Acme X200 manual: warranty, battery, maintenance and troubleshooting.",
     [["two-year", "two year", "2-year", "2 year"], ["4 hours", "four hours"], ["120 minutes"], ["60 minutes"],
      ["15%"], ["dust bin"], ["hepa"], ["three months", "3 months"], ["six months", "6 months"],
      ["10 seconds", "ten seconds"], ["e5"], ["water"]]),
    ("List every rule of the information security policy.",
     [["14 characters", "fourteen characters"], ["multi-factor", "mfa"], ["full-disk encryption", "encrypt"],
      ["24 hours"], ["security@example.com"], ["confidential"], ["reused"]]),
    ("总结员工休假制度的主要规定。",
     [["十天", "10天", "10 天"], ["十五天", "15天", "15 天"], ["三月三十一日", "3月31日"], ["十点", "10点"],
      ["三天", "3天"], ["病假证明"], ["一百五十八天", "158天"], ["人事系统"], ["部门负责人"]]),
    ("Summarise the study on the sensitivity of laboratory testing for influenza in Canada: aim, method, result "
     "and conclusion.",
     [["sensitivity"], ["poisson"], ["1999"], ["33%", "33 %"], ["30", "40%"], ["sample quality", "specimen"],
      ["surveillance"], ["false negative"]]),
]


def key_point_share(answer: str, points: list[list[str]]) -> float:
    text = normalize(strip_markers(answer))
    return sum(any(normalize(alt) in text for alt in alts) for alts in points) / len(points)


def write_corpus(folder: Path) -> None:
    shutil.copytree(ROOT / "examples" / "docs", folder, dirs_exist_ok=True)
    for line in (ROOT / "eval" / "data" / "covidqa" / "corpus.jsonl").open(encoding="utf-8"):
        doc = json.loads(line)
        if doc["_id"] == LONG_PAPER:
            (folder / "influenza-testing-canada.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n",
                                                              encoding="utf-8")
            return
    raise SystemExit(f"COVID-QA paper {LONG_PAPER} not found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="stuff,map_reduce,refine,map_rerank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default runs/strategies[-<dataset>-<split>].json")
    parser.add_argument("--dataset", default=None, help="a dataset's questions instead of the summary questions")
    parser.add_argument("--split", default="dev", help="with --dataset: dev | test | all")
    parser.add_argument("--limit", type=int, default=20, help="with --dataset: questions drawn from the split")
    parser.add_argument("--embedded", choices=("small", "large"), default=None, help="sets RAG_LLM_EMBEDDED")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="with --dataset: where the evaluation knowledge base is cached (default: the setting)")
    args = parser.parse_args()
    if args.embedded:
        os.environ["RAG_LLM_EMBEDDED"] = args.embedded
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.out is None:
        name = f"strategies-{Path(args.dataset).name}-{args.split}" if args.dataset else "strategies"
        args.out = ROOT / "runs" / f"{name}.json"
    if args.dataset:
        run_dataset(args, strategies)
    else:
        run_summaries(args, strategies)


def summarise(rows: list[dict], strategies: list[str], score: tuple[str, str], citations: tuple[str, str], *,
              unknown_calls: int) -> list[dict]:
    """One summary row per strategy that ran: questions, the mean of the `score` column and of the
    `citations` column over the rows that have one (each given as (label, row key)), refusals,
    mean LLM calls (`unknown_calls` for a row without strategy info), median seconds."""
    summary = []
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        if not mine:
            continue
        cited = [r[citations[1]] for r in mine if r[citations[1]] is not None]
        summary.append({"strategy": strategy, "questions": len(mine),
                        score[0]: round(statistics.mean(r[score[1]] for r in mine), 3),
                        citations[0]: round(statistics.mean(cited), 3) if cited else None,
                        "refused": sum(r["refused"] for r in mine),
                        "llm calls": statistics.mean(r["llm_calls"] or unknown_calls for r in mine),
                        "p50 s": round(statistics.median(r["seconds"] for r in mine), 1)})
    return summary


def run_summaries(args: argparse.Namespace, strategies: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="rag-strategies-"))
    try:
        docs = work / "docs"
        write_corpus(docs)
        settings = load_settings(data_dir=work / "data")
        services = build_services(settings)
        try:
            build_ingestor(services, KB).ingest_folder(docs)
            pipeline = services.pipeline
            rng = random.Random(args.seed)
            rows = []
            for question, points in QUESTIONS:
                order = strategies[:]
                rng.shuffle(order)
                for strategy in order:
                    started = time.perf_counter()
                    answer = pipeline.answer(question, KB, strategy=strategy)
                    seconds = time.perf_counter() - started
                    cited = [c for c in answer.citations if c.origin == "model" or c.supported is not None]
                    rows.append({
                        "question": question, "strategy": strategy, "seconds": round(seconds, 2),
                        "refused": answer.refused, "key_points": round(key_point_share(answer.answer, points), 3),
                        "citations": len(answer.citations),
                        "supported": round(sum(bool(c.supported) for c in cited) / len(cited), 3) if cited else None,
                        "llm_calls": (answer.info.get("strategy") or {}).get("llm_calls"),
                        "ran": (answer.info.get("strategy") or {}).get("name"),
                        "answer": answer.answer,
                    })
                    print(f"{strategy:10s} {seconds:6.1f}s key points {rows[-1]['key_points']:.2f} "
                          f"refused={answer.refused}  {question[:50]}", flush=True)
        finally:
            services.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(rows, strategies, ("key points", "key_points"), ("supported citations", "supported"),
                        unknown_calls=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\n{markdown_table(summary)}\n\nrows: {args.out}")


class _Recorder:
    """The pipeline, recording each answer's strategy info (`evaluate_answers` keeps the scores)."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.infos: list[dict] = []

    def answer(self, *args, **kwargs):
        answer = self.pipeline.answer(*args, **kwargs)
        self.infos.append(answer.info.get("strategy") or {})
        return answer


def run_dataset(args: argparse.Namespace, strategies: list[str]) -> None:
    from eval.ablations import ChunkLocator
    from eval.answer_eval import evaluate_answers
    from eval.runner import eval_kb_name, open_dataset, prepare_kb

    settings = load_settings(data_dir=args.data_dir) if args.data_dir else load_settings()
    services = build_services(settings)
    try:
        dataset, written = open_dataset(services, args.dataset)
        qids = [q for q in dataset.sample(args.limit, args.seed, args.split) if q in dataset.answer_keys]
        kb = eval_kb_name("eval", dataset.name, settings)
        prepare_kb(services, dataset, kb, written=written)
        pipeline, locator = _Recorder(services.pipeline), ChunkLocator(dataset)
        rng = random.Random(args.seed)
        rows = []
        for qid in qids:
            order = strategies[:]
            rng.shuffle(order)
            for strategy in order:
                result = evaluate_answers(pipeline, kb, dataset, [qid], None, locator, strategy=strategy)
                row, info = result.per_query[0], pipeline.infos[-1]
                rows.append({"strategy": strategy, "llm_calls": info.get("llm_calls"), "ran": info.get("name"),
                             "reason": info.get("reason"), "chosen": info.get("chosen"),
                             "fallback": info.get("fallback"), "seconds": round(row["timings"]["total"], 2),
                             **{k: row[k] for k in ("qid", "question", "gold", "answer", "refused", "refusal_reason",
                                                    "accuracy", "citation_correct", "cited")}})
                print(f"{strategy:10s} {rows[-1]['seconds']:6.1f}s accuracy {row['accuracy']:.0f} "
                      f"refused={row['refused']}  {row['question'][:50]}", flush=True)
    finally:
        services.close()
    summary = summarise(rows, strategies, ("accuracy", "accuracy"), ("citation correct", "citation_correct"),
                        unknown_calls=0)
    record = {"dataset": dataset.name, "split": args.split, "limit": args.limit, "seed": args.seed, "qids": qids,
              "llm_embedded": settings.llm_embedded, "summary": summary, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\n{dataset.name} {args.split}, {len(qids)} questions, seed {args.seed}, "
          f"embedded model {settings.llm_embedded}")
    print(f"\n{markdown_table(summary)}\n\nrows: {args.out}")


if __name__ == "__main__":
    main()
