"""Query latency per stage on the COVID-QA index and on a scaled-up index.

    python benchmarks/query.py [--data-dir DIR] [--queries 100] [--scale 100000]
                               [--rerank-model PATH | --latency-reranker] [--generate 10]

- The COVID-QA knowledge base is the one `rag eval covidqa` builds (same name, same chunker), so
  with the same `--data-dir` (default: the configured `RAG_DATA_DIR`) nothing is embedded again.
- Retrieval only: `Pipeline.retrieve(question, mode="hybrid", rerank=False)`, i.e. query
  embedding + dense + BM25 + RRF + payload fetch, one question at a time after 5 warm-ups;
  p50/p95 of every stage and of the whole.
- + rerank of the top 20: with `--rerank-model` (a bge-reranker name or local path), or with
  `--latency-reranker`: a cross-encoder built from the bundled MiniLM-L6 weights with an untrained
  head. Its scores are meaningless (no reranker weights can be installed offline), its cost is
  that of a real MiniLM-L6 cross-encoder; the report says which one ran.
- + generation: `--generate N` questions streamed through the embedded LLM: first token (after the
  citation-marker filter), TTFT and TPOT of the answer's LLM call (`ttft`/`tpot`, rag/llm_timing.py;
  TPOT in ms), generation and total, p50/p95/mean; output tokens per answer (mean).
- Scale: a knowledge base of `--scale` chunks made by copying the COVID-QA chunks (text kept, so
  BM25 postings grow as in a larger corpus of the same language; vectors jittered so every point
  is distinct in the HNSW graph), written straight to the stores in a temporary folder.

Prints one JSON object; `--out` also writes it to a file."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.api_load import random_head_reranker  # noqa: E402
from benchmarks.scale import jittered_copies  # noqa: E402
from eval.datasets import load_dataset  # noqa: E402
from eval.metrics import latency_summary  # noqa: E402
from eval.runner import eval_kb_name, prepare_kb  # noqa: E402
from rag.factory import Services, build_services  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.types import Chunk  # noqa: E402

log = logging.getLogger("bench.query")
RETRIEVAL_STAGES = ("embed", "dense", "bm25", "fusion", "fetch", "retrieval_total")
WARM_UP = 5


def sample_questions(dataset, n: int, seed: int) -> list[str]:
    qids = sorted(dataset.queries)
    random.Random(seed).shuffle(qids)
    return [dataset.queries[q] for q in qids[:n]]


def stage_latency(pipeline: Pipeline, kb: str, questions: list[str], *, rerank: bool,
                  stages: tuple[str, ...]) -> dict[str, dict[str, float]]:
    for q in questions[:WARM_UP]:
        pipeline.retrieve(q, kb, mode="hybrid", rerank=rerank, limit=10)
    rows = []
    for q in questions[WARM_UP:]:
        timings = pipeline.retrieve(q, kb, mode="hybrid", rerank=rerank, limit=10).timings
        rows.append({s: timings.get(s, 0.0) for s in stages})
    return {stage: _ms(summary) for stage, summary in latency_summary(rows).items()}


def _ms(summary: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1000, 2) for k, v in summary.items() if k in ("p50", "p95", "mean")}


def generation_latency(pipeline: Pipeline, kb: str, questions: list[str]) -> dict[str, object]:
    rows, tpot, tokens = [], [], []
    pipeline.llm.warm_up()  # the model's load is not the first answer's TTFT
    for q in questions:
        events = list(pipeline.stream(q, kb, rerank=False))
        done = events[-1]
        if done["type"] != "done":
            raise RuntimeError(f"generation failed: {done}")
        t = done["timings"]
        rows.append({"first_token": t.get("first_token", t.get("generate", 0.0)), "ttft": t.get("ttft", 0.0),
                     "generate": t.get("generate", 0.0), "total": t["total"]})
        if "tpot" in t:
            tpot.append({"tpot": t["tpot"]})
        tokens.append(done["answer"]["info"].get("generation", {}).get("output_tokens", 0))
    summary = {k: {m: round(v, 2) for m, v in s.items() if m in ("p50", "p95", "mean")}
               for k, s in latency_summary(rows).items()}
    out: dict[str, object] = {"questions": len(questions), "seconds": summary, "model": pipeline.llm.name,
                              "output_tokens_mean": round(sum(tokens) / max(len(tokens), 1), 1)}
    if tpot:
        out["tpot_ms"] = _ms(latency_summary(tpot)["tpot"])
    return out


def build_scaled_kb(source: Services, kb: str, target: Services, n: int, seed: int) -> tuple[str, float]:
    """Copy the chunks of `kb` into a new knowledge base of `n` chunks under `target`."""
    knowledge = source.kbs.open(kb)
    ids = sorted(knowledge.store.ids(knowledge.collection))
    chunks = knowledge.get_chunks(ids)
    vectors = knowledge.store.get_vectors(knowledge.collection, ids)
    base = [(chunks[i], vectors[i]) for i in ids if i in chunks and i in vectors]
    name = f"scale-{n}"
    scaled = target.kbs.open_or_create(name)
    started = time.perf_counter()
    copies = jittered_copies(np.stack([v for _, v in base]), n, seed)
    for start in range(0, n, len(base)):  # one write per pass over the base set
        rows = range(start, min(start + len(base), n))
        clones = []
        for row in rows:
            chunk, copy = base[copies.source[row]][0], int(copies.copy[row])
            clones.append(Chunk.from_payload({**chunk.payload(), "chunk_id": f"{chunk.id}-c{copy}",
                                              "doc_id": f"{chunk.doc_id}-c{copy}", "kb": name}))
        scaled.write_documents(clones, copies.vectors[rows.start:rows.stop])
    scaled.index_vectors(0)  # the HNSW graph, whatever the number of vectors outside it
    return name, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="where the COVID-QA eval knowledge base lives")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=0, help="also measure on a copied index of this many chunks")
    ap.add_argument("--rerank-model", default=None, help="a bge-reranker name or local path")
    ap.add_argument("--latency-reranker", action="store_true",
                    help="rerank with a MiniLM-L6 cross-encoder with an untrained head (cost only)")
    ap.add_argument("--rerank-candidates", type=int, default=20)
    ap.add_argument("--generate", type=int, default=0, help="questions to answer with the LLM")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = load_settings(data_dir=args.data_dir, rerank_model="none", rerank_candidates=args.rerank_candidates)
    services = build_services(settings)
    dataset = load_dataset("covidqa")
    kb = eval_kb_name("eval", dataset.name, settings)
    report = prepare_kb(services, dataset, kb)
    questions = sample_questions(dataset, args.queries + WARM_UP, args.seed)
    pipeline = services.pipeline
    chunks = services.kbs.open(kb).count()
    result: dict[str, object] = {"kb": kb, "chunks": chunks, "embedder": services.embedder.name,
                                 "embedded_now": report.chunks_added, "queries": args.queries,
                                 "store": settings.resolved_vector_backend, "top_k": settings.top_k}
    result["retrieval_only"] = stage_latency(pipeline, kb, questions, rerank=False, stages=RETRIEVAL_STAGES)

    with tempfile.TemporaryDirectory() as tmp:
        reranker_path = args.rerank_model or (str(random_head_reranker(Path(tmp) / "minilm-l6-untrained-head"))
                                              if args.latency_reranker else None)
        if reranker_path:
            from rag.adapters.rerankers import resolve_reranker

            reranker = resolve_reranker(reranker_path, max_length=settings.rerank_max_length,
                                        batch_size=settings.rerank_batch_size)
            result["reranker"] = (f"{reranker_path} (untrained head: latency only)" if args.latency_reranker
                                  else reranker_path)
            # the same store and models, every candidate kept: measure the full top-N cost
            ranked = services.with_(settings=settings.model_copy(update={"rerank_min_score": 0.0}),
                                    reranker=reranker, store=services.store, catalog=services.catalog,
                                    embedder=services.embedder_resolution.embedder)
            result["with_rerank"] = stage_latency(ranked.pipeline, kb, questions, rerank=True,
                                                  stages=(*RETRIEVAL_STAGES, "rerank"))
        if args.generate:
            result["generation"] = generation_latency(pipeline, kb, questions[WARM_UP:WARM_UP + args.generate])
        if args.scale:
            target = build_services(load_settings(data_dir=Path(tmp) / "scaled", rerank_model="none"),
                                    embedder=services.embedder_resolution.embedder)
            name, build_s = build_scaled_kb(services, kb, target, args.scale, args.seed)
            result["scaled"] = {"chunks": target.kbs.open(name).count(), "build_seconds": round(build_s, 1),
                                "retrieval_only": stage_latency(target.pipeline, name, questions, rerank=False,
                                                                stages=RETRIEVAL_STAGES)}
            target.close()
    services.close()
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
