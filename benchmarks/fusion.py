"""Fusion benchmark: which fusion of the dense and BM25 lists ranks best when there is no reranker.

    python -m benchmarks.fusion fetch --data-dir ~/.rag --kb-prefix eval --no-ingest --lists runs/fusion/lists \
        cmrc2018 covidqa ../shared/eval/rgb_zh_refine ../shared/eval/rgb_zh_int
    python -m benchmarks.fusion fetch --data-dir runs/fusion cmrcwin-100 covidwin-6
    python -m benchmarks.fusion evaluate --data-dir runs/fusion [--seed 13] [--out runs/fusion/report.md]

`fetch` ingests each dataset once through the real eval path (`eval.runner.prepare_kb`: the
configured chunker and embedder; or, with `--kb-prefix eval --no-ingest`, reads the knowledge
base `rag eval` already built in that data dir) and caches, for every judged query, the dense
list and the BM25 list to depth 100 with their scores (`benchmarks/fusion_data.py` builds the
derived datasets). `evaluate` then scores fusion variants offline in seconds, with the fusion
code of the query path (`rag.fusion`):

- queries are split into a dev and a test half with a fixed seed; every tuned parameter is
  chosen on the dev halves of all datasets together (one setting for all: the best worst-case
  margin over the better single list, over datasets and both metrics, the mean margin breaking
  ties), and reported on the test halves;
- MRR@10 and nDCG@10 over the top 10 chunks, at document level (chunks deduplicated to their
  documents, as `rag eval` does) or answer-chunk level (a chunk holding a gold answer span);
- each row of a test table carries the paired bootstrap 95 % interval of the settings
  default's difference to it (resampling test queries, 2,000 draws, fixed seed).

Datasets (names understood by `fusion_data`): a shipped name or a BEIR folder (`covidqa*` is
scored at answer-chunk level, the rest at document level); `cmrc2018-pN` (the first N CMRC 2018
paragraphs in file order and their questions), `covidqa-dN` (the N COVID-QA papers with the
most questions per character and all their questions), `cmrcwin-N` / `covidwin-N`
(multi-positive sets with same-document hard negatives: 3-sentence windows, stride 1, of N CMRC
paragraphs drawn with seed 0 / of the N densest COVID-QA papers; positives = the windows that
hold a gold answer span, so most questions have 2-3; doc = window level)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fusion_data import fetch  # noqa: E402
from eval.metrics import dedupe_docs, ndcg_at_k, reciprocal_rank  # noqa: E402
from rag.fusion import RankedList, rrf  # noqa: E402
from rag.types import ScoredId  # noqa: E402

log = logging.getLogger("bench.fusion")
DEPTH = 10  # chunks scored per query, as in `rag eval`
METRICS = ("mrr@10", "ndcg@10")
DATASETS = ("cmrc2018", "covidqa", "rgb_zh_refine", "rgb_zh_int", "cmrcwin-100", "covidwin-6")  # evaluated by default
BOOTSTRAP = 2000


@dataclass
class Query:
    qid: str
    question: str
    dense: list[ScoredId]
    bm25: list[ScoredId]
    relevant: set[str]  # doc ids (doc level) or chunk ids (answer level)
    n_relevant: int


@dataclass
class Data:
    name: str
    level: str
    chunk_doc: dict[str, str]
    queries: list[Query]


def list_file(lists: Path, name: str) -> Path:
    """Where `fetch` caches a dataset's lists (a folder path is named by its last part)."""
    return lists / f"{Path(name).name}.json"


def load(name: str, data_dir: Path, lists: Path | None = None) -> Data:
    raw = fetch(name, data_dir, list_file(lists or data_dir / "lists", name))
    name = Path(name).name
    answer_level = name.startswith("covidqa")
    queries = []
    for row in raw["queries"]:
        if answer_level:
            queries.append(query_from_row(row, set(row["answer_chunks"] or ()), 1))
        else:
            queries.append(query_from_row(row, set(row["relevant_docs"]), len(row["relevant_docs"])))
    return Data(name, "answer" if answer_level else "doc", raw["chunk_doc"], queries)


def query_from_row(row: dict[str, Any], relevant: set[str], n_relevant: int) -> Query:
    """A cached row (qid, question, the two lists as [chunk id, score] pairs) as a Query."""
    return Query(row["qid"], row["question"], [ScoredId(c, s) for c, s in row["dense"]],
                 [ScoredId(c, s) for c, s in row["bm25"]], relevant, n_relevant)


def add_source_args(parser: argparse.ArgumentParser, *, kb_prefix: bool = True) -> None:
    """--data-dir, --lists (and --kb-prefix): where the knowledge bases and the cached lists are."""
    parser.add_argument("--data-dir", type=Path, default=Path("runs/fusion"))
    if kb_prefix:
        parser.add_argument("--kb-prefix", default="fusion",
                            help="eval: the knowledge bases `rag eval` built in --data-dir")
    parser.add_argument("--lists", type=Path, help="folder of the cached lists (default: DATA_DIR/lists)")


def lists_dir(args: argparse.Namespace) -> Path:
    return args.lists or args.data_dir / "lists"


def split(qids: Sequence[str], seed: int) -> tuple[set[str], set[str]]:
    """A fixed-seed half split of query ids: (dev, test)."""
    ids = sorted(qids)
    random.Random(seed).shuffle(ids)
    half = len(ids) // 2
    return set(ids[:half]), set(ids[half:])


def score(data: Data, q: Query, ranking: Sequence[str]) -> dict[str, float]:
    top = list(ranking[:DEPTH])
    if data.level == "doc":
        items = dedupe_docs(data.chunk_doc.get(c, c) for c in top)
    else:
        items = top
    flags = [i in q.relevant for i in items]
    return {"mrr@10": reciprocal_rank(flags, 10), "ndcg@10": ndcg_at_k(flags, q.n_relevant, 10)}


def bootstrap(diffs: np.ndarray, seed: int = 0, draws: int = BOOTSTRAP) -> tuple[float, float]:
    """Paired percentile bootstrap 95 % interval of the mean of per-query differences."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(draws, len(diffs)))
    means = diffs[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# -- fusion variants --------------------------------------------------------------------------

Ranker = Callable[[Data, Query], list[str]]


def single(name: str) -> Ranker:
    return lambda data, q: [h.chunk_id for h in getattr(q, name)]


def plain_rrf(top_k: int = 30, k: int = 60, dense_w: float = 1.0, bm25_w: float = 1.0) -> Ranker:
    def rank(data: Data, q: Query) -> list[str]:
        lists = [RankedList("dense", "original", q.dense[:top_k], dense_w),
                 RankedList("bm25", "original", q.bm25[:top_k], bm25_w)]
        return [f.chunk_id for f in rrf(lists, k=k)]
    return rank


def evaluate_ranker(data: Data, ranker: Ranker, qids: set[str] | None = None) -> dict[str, np.ndarray]:
    rows = [score(data, q, ranker(data, q)) for q in data.queries if qids is None or q.qid in qids]
    return {m: np.array([r[m] for r in rows]) for m in METRICS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("datasets", nargs="+")
    add_source_args(f)
    f.add_argument("--no-ingest", action="store_true", help="read the knowledge base as it is")
    e = sub.add_parser("evaluate")
    e.add_argument("--datasets", default=",".join(DATASETS))
    add_source_args(e, kb_prefix=False)
    e.add_argument("--seed", type=int, default=13)
    e.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.cmd == "fetch":
        for name in args.datasets:
            fetch(name, args.data_dir, list_file(lists_dir(args), name), kb_prefix=args.kb_prefix,
                  ingest=not args.no_ingest)
        return 0
    from benchmarks.fusion_eval import run_evaluation

    report = run_evaluation([load(n, args.data_dir, args.lists) for n in args.datasets.split(",")], args.seed)
    if args.out:
        args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
