"""Cost of the live-chunk filter on queries (issue 11 item 5): p50 of `KnowledgeBase.search_dense`
and `search_bm25` (filtered to the catalog's live ids) against the same store and BM25 calls
unfiltered, on a knowledge base of `--chunks` chunks in documents of `--per-doc` chunks, plus the
cost of reloading the live set after a catalog change.

    python benchmarks/live_filter.py [--chunks 100000] [--per-doc 100] [--queries 200]

Deterministic hash-embedder vectors (dim 64), real Qdrant Edge store and local BM25 index in a
temporary folder. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.factory import build_services  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.testing import HashEmbedder  # noqa: E402
from rag.types import Chunk  # noqa: E402

WORDS = ("warranty battery reset password network policy leave travel expense device manual charge screen "
         "account security backup update install printer email calendar meeting budget report invoice").split()


def p50_ms(fn, args: list) -> float:
    times = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3)


def paired_p50_ms(plain, filtered, args: list, rounds: int = 3) -> tuple[float, float]:
    """p50 of both, each query run by both back to back (alternating which goes first), so that a
    busy machine slows both alike."""
    a_times, b_times = [], []
    for r in range(rounds):
        for i, arg in enumerate(args):
            order = [(plain, a_times), (filtered, b_times)]
            for fn, out in order if (i + r) % 2 else order[::-1]:
                t0 = time.perf_counter()
                fn(arg)
                out.append(time.perf_counter() - t0)
    return round(statistics.median(a_times) * 1000, 3), round(statistics.median(b_times) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--per-doc", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(Settings(_env_file=None, data_dir=Path(tmp), vector_backend="edge"),
                                  embedder=HashEmbedder(dim=64))
        kb = services.kbs.open_or_create("bench")
        started = time.perf_counter()
        batch = 2000
        for start in range(0, args.chunks, batch):
            chunks = []
            for i in range(start, min(start + batch, args.chunks)):
                text = " ".join(rng.choice(WORDS) for _ in range(12))
                doc = i // args.per_doc
                chunks.append(Chunk(id=f"c{i}", kb="bench", doc_id=f"d{doc}", source=f"doc{doc}.txt", text=text,
                                    start=0, end=len(text)))
            kb.write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))
        build_s = time.perf_counter() - started
        questions = [" ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(args.queries)]
        vectors = list(kb.embed_queries(questions))
        kb.live_ids()  # warm the cache
        k = args.top_k
        dense = paired_p50_ms(lambda v: kb.store.search(kb.collection, v, k, None), lambda v: kb.search_dense(v, k),
                              vectors)
        bm25 = paired_p50_ms(lambda q: kb.lexical.search(q, k, None), lambda q: kb.search_bm25(q, k), questions)
        result = {
            "chunks": args.chunks, "documents": args.chunks // args.per_doc, "top_k": k, "queries": args.queries,
            "build_seconds": round(build_s, 1),
            "dense_p50_ms_unfiltered": dense[0], "dense_p50_ms_live_filter": dense[1],
            "bm25_p50_ms_unfiltered": bm25[0], "bm25_p50_ms_live_filter": bm25[1],
            "generation_check_p50_ms": p50_ms(lambda _: services.catalog.generation("bench"), questions),
        }
        reloads = []
        for _ in range(5):
            kb._live = None
            t0 = time.perf_counter()
            kb.live_ids()
            reloads.append(time.perf_counter() - t0)
        result["live_set_reload_ms"] = round(statistics.median(reloads) * 1000, 1)
        services.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
