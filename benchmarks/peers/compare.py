"""Side-by-side benchmark driver: our pipeline vs LangChain vs LlamaIndex on COVID-QA (issue 7).

    . .venv/bin/activate
    bash benchmarks/peers/setup_peers.sh                 # once: the peers' own virtualenv
    python benchmarks/peers/compare.py --rounds 2        # writes benchmarks/peers/results.md

1. Prepares the shared inputs with OUR chunker (`make_chunker("recursive")`, default size and
   overlap) over the COVID-QA documents (a seeded sample of `--docs` documents, all with
   `--docs 0`): `chunks.jsonl` (id, doc_id, start, end, text) and `queries.jsonl` (a seeded
   sample of `--queries` questions whose gold document is in the sample).
2. Runs each system in its own process, alternating (ours, langchain, llamaindex, ours, ...)
   for `--rounds` rounds so machine drift hits every system alike.
3. Scores every system's rankings here, the same way: a chunk is relevant when it comes from
   the gold document and contains a gold answer (`chunk_contains_answer`, text matching);
   hit@5, MRR@10 and nDCG@10 with `eval.metrics.retrieval_metrics` (one relevant item).
4. Writes the Markdown table with ratios ours/peer (`--out`) and the raw numbers beside it (.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from benchmarks.peers.report import render_markdown  # noqa: E402
from eval.datasets import Dataset, load_dataset  # noqa: E402
from eval.metrics import chunk_contains_answer, latency_summary, retrieval_metrics  # noqa: E402
from ingest.chunkers import make_chunker  # noqa: E402
from rag.types import ParsedDocument  # noqa: E402

log = logging.getLogger("peers.compare")

SYSTEMS = ("ours", "langchain", "llamaindex")
PEERS_PYTHON = os.environ.get("PEERS_PYTHON", "/work/peers-venv/bin/python")


def prepare(dataset: Dataset, n_docs: int, n_queries: int, seed: int, folder: Path) -> dict[str, Any]:
    """Chunk the sampled documents with our default recursive chunker and sample the queries."""
    doc_ids = sorted(d for d, doc in dataset.corpus.items() if doc.text.strip())
    if 0 < n_docs < len(doc_ids):
        doc_ids = sorted(random.Random(seed).sample(doc_ids, n_docs))
    chunker = make_chunker("recursive")
    chunks = []
    for doc_id in doc_ids:
        doc = dataset.corpus[doc_id]
        for span in chunker.split(ParsedDocument(text=doc.text, title=doc.title)):
            cid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"covidqa/{doc_id}/{span.start}:{span.end}"))
            chunks.append({"id": cid, "doc_id": doc_id, "start": span.start, "end": span.end, "text": span.text})
    chosen = set(doc_ids)
    eligible = sorted(q for q, golds in dataset.answers.items()
                      if golds and {g.doc_id for g in golds} <= chosen and q in dataset.queries)
    qids = eligible if n_queries <= 0 or n_queries >= len(eligible) else random.Random(seed).sample(eligible, n_queries)
    queries = [{"qid": q, "question": dataset.queries[q]} for q in qids]
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("chunks.jsonl", chunks), ("queries.jsonl", queries)):
        with open(folder / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    log.info("prepared %d documents, %d chunks, %d queries in %s", len(doc_ids), len(chunks), len(queries), folder)
    return {"docs": len(doc_ids), "chunks": len(chunks), "queries": len(queries), "eligible_queries": len(eligible),
            "chunk_chars": sum(len(c["text"]) for c in chunks)}


def command_for(system: str, folder: Path, workdir: Path, top_k: int, extra: dict[str, str]) -> list[str]:
    common = ["--chunks", str(folder / "chunks.jsonl"), "--queries", str(folder / "queries.jsonl"),
              "--workdir", str(workdir), "--top-k", str(top_k)]
    if system == "ours":
        return [sys.executable, str(HERE / "run_ours.py"), *common, "--impl", extra.get("impl", "auto")]
    return [PEERS_PYTHON, str(HERE / "run_peer.py"), "--system", system, *common,
            "--qdrant", extra.get("qdrant", "disk")]


def run_system(system: str, folder: Path, round_no: int, top_k: int, extra: dict[str, str],
               timeout: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{system}-r{round_no}-", dir=folder))
    cmd = command_for(system, folder, workdir, top_k, extra)
    log.info("round %d: %s", round_no, " ".join(cmd))
    started = time.perf_counter()
    with open(folder / f"{system}-r{round_no}.log", "w", encoding="utf-8") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
    shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} round {round_no} failed (exit {proc.returncode}); see {err.name}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    log.info("round %d: %s ingest %.1f s, rss %.0f MB, p50 %.1f ms", round_no, system, result["ingest_s"],
             result["peak_rss_mb"], 1000 * statistics.median(result["latency_s"]))
    return result


def score(rankings: dict[str, list[str]], chunks: dict[str, dict], dataset: Dataset, top_k: int) -> dict[str, float]:
    qids = sorted(rankings)
    relevance = []
    for qid in qids:
        golds = dataset.answers[qid]
        relevance.append([chunk_contains_answer(chunks[cid]["doc_id"], None, None, chunks[cid]["text"], golds)
                          for cid in rankings[qid][:top_k]])
    result = retrieval_metrics(relevance, [1] * len(qids), ks=(1, 5, 10), recall_ks=(), rank_k=10)
    return result["aggregate"]


def _ms(values: list[float]) -> dict[str, float]:
    lat = latency_summary({"x": v} for v in values)["x"]
    return {k: 1000 * v for k, v in lat.items()}


def summarise(runs: list[dict[str, Any]], chunks: dict[str, dict], dataset: Dataset, top_k: int) -> dict[str, Any]:
    """Pooled latencies over the rounds, median ingest, max RSS, quality of the first round."""
    total = [t for r in runs for t in r["latency_s"]]
    embed = [t for r in runs for t in r["query_embed_s"]]
    rest = [t - e for r in runs for t, e in zip(r["latency_s"], r["query_embed_s"])]
    lat, emb, other = _ms(total), _ms(embed), _ms(rest)
    qualities = [score(r["rankings"], chunks, dataset, top_k) for r in runs]
    return {
        "ingest_s": statistics.median(r["ingest_s"] for r in runs),
        "ingest_s_rounds": [r["ingest_s"] for r in runs],
        "ingest_embed_s": statistics.median(r["ingest_embed_s"] for r in runs),
        "ingest_other_s": statistics.median(r["ingest_s"] - r["ingest_embed_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "p50_ms": lat["p50"], "p95_ms": lat["p95"], "mean_ms": lat["mean"],
        "p50_ms_rounds": [1000 * statistics.median(r["latency_s"]) for r in runs],
        "query_embed_p50_ms": emb["p50"],
        "other_p50_ms": other["p50"], "other_p95_ms": other["p95"], "other_mean_ms": other["mean"],
        "quality": qualities[0],
        "quality_stable": all(q == qualities[0] for q in qualities),
        "versions": runs[0].get("versions", {}),
        "notes": runs[0].get("notes", ""),
        "stage_ms": runs[-1].get("stage_ms", {}),
        "rerank": runs[0].get("rerank"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="covidqa")
    parser.add_argument("--docs", type=int, default=30, help="documents sampled from the corpus (0 = all 98: "
                        "~4,200 chunks, ~15 min of embedding per system and round on 2 cores)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--impl", default="auto", choices=["auto", "pipeline", "direct"], help="our side: see run_ours.py")
    parser.add_argument("--qdrant", default="disk", choices=["disk", "memory"], help="the peers' qdrant-client mode")
    parser.add_argument("--workdir", default=None, help="where inputs, logs and indexes go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per system run")
    parser.add_argument("--out", default=str(HERE / "results.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    if any(s != "ours" for s in systems) and not Path(PEERS_PYTHON).exists():
        parser.error(f"{PEERS_PYTHON} not found: run benchmarks/peers/setup_peers.sh first (or set PEERS_PYTHON)")
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="peers-bench-"))
    dataset = load_dataset(args.dataset)
    data = prepare(dataset, args.docs, args.queries, args.seed, folder)
    chunks = {}
    with open(folder / "chunks.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            chunks[row["id"]] = row

    extra = {"impl": args.impl, "qdrant": args.qdrant}
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for round_no in range(1, args.rounds + 1):
        for system in systems:
            runs[system].append(run_system(system, folder, round_no, args.top_k, extra, args.timeout))

    summary = {s: summarise(r, chunks, dataset, args.top_k) for s, r in runs.items()}
    setup = {**data, "dataset": args.dataset, "seed": args.seed, "rounds": args.rounds, "top_k": args.top_k,
             "order": systems, "qdrant": args.qdrant, "cpu_count": os.cpu_count(), "machine": platform.platform(),
             "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}
    out = Path(args.out)
    out.write_text(render_markdown(setup, summary), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"setup": setup, "systems": summary}, indent=2), encoding="utf-8")
    log.info("wrote %s (inputs and logs in %s)", out, folder)
    sys.stdout.write(out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
