"""The scale helpers: jittered copies (benchmarks/scale.py, shared by query.py and the peers' scale
phase) and the peers' scale inputs, scoring map and exact dense reference (benchmarks/peers/scaled.py)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from benchmarks.peers.scaled import copy_rows, exact_dense, recall_at_k, to_origin, write_scaled_inputs
from benchmarks.peers.stats import per_query_quality
from benchmarks.scale import jittered_copies
from eval.datasets import GoldAnswer


def _unit(rows: int, dim: int = 8, seed: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_jittered_copies_cycle_the_base_set_with_distinct_unit_vectors_near_their_source():
    base = _unit(3)
    copies = jittered_copies(base, 7, seed=0)
    assert copies.source.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert copies.copy.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert copies.vectors.dtype == np.float32 and copies.vectors.shape == (7, 8)
    assert np.allclose(np.linalg.norm(copies.vectors, axis=1), 1.0, atol=1e-6)
    assert len({v.tobytes() for v in copies.vectors}) == 7  # every point distinct
    cosine = np.sum(copies.vectors * base[copies.source], axis=1)
    assert cosine.min() > 0.99  # sigma 0.02 in 8 dimensions: close to the source
    other = base[(copies.source + 1) % 3]
    assert (cosine > np.sum(copies.vectors * other, axis=1)).all()
    again = jittered_copies(base, 7, seed=0)
    assert np.array_equal(again.vectors, copies.vectors)  # reproducible
    assert not np.array_equal(jittered_copies(base, 7, seed=1).vectors, copies.vectors)


def test_jittered_copies_reject_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        jittered_copies(np.zeros((0, 4), dtype=np.float32), 3)
    with pytest.raises(ValueError, match=">= 0"):
        jittered_copies(_unit(2), -1)
    assert len(jittered_copies(_unit(2), 0).source) == 0


def test_copy_rows_keep_text_and_first_copy_give_later_copies_new_ids_and_documents():
    rows = [{"id": str(uuid.uuid4()), "doc_id": "d1", "start": 0, "end": 5, "text": "alpha"},
            {"id": str(uuid.uuid4()), "doc_id": "d2", "start": 0, "end": 4, "text": "beta"}]
    out = copy_rows(rows, np.array([0, 1, 0]), np.array([0, 0, 1]))
    assert out[0] == rows[0] and out[1] == rows[1]
    assert out[2]["text"] == "alpha" and out[2]["doc_id"] == "d1-c1" and out[2]["start"] == 0
    assert out[2]["id"] != rows[0]["id"] and uuid.UUID(out[2]["id"])  # a UUID, as Qdrant point ids must be
    assert copy_rows(rows, np.array([0, 1, 0]), np.array([0, 0, 1])) == out  # deterministic ids


def test_write_scaled_inputs_writes_aligned_copies_and_maps_them_to_their_chunk(tmp_path):
    base, out = tmp_path / "base", tmp_path / "scaled"
    base.mkdir()
    rows = [{"id": str(uuid.uuid4()), "doc_id": f"d{i}", "start": 0, "end": 1, "text": f"t{i}"} for i in range(3)]
    (base / "chunks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    np.save(base / "vectors.npy", _unit(3))
    (base / "queries.jsonl").write_text('{"qid": "q", "question": "?"}\n', encoding="utf-8")
    np.save(base / "query_vectors.npy", _unit(1))
    origin = write_scaled_inputs(base, out, 8, seed=0)
    scaled = [json.loads(line) for line in open(out / "chunks.jsonl", encoding="utf-8")]
    vectors = np.load(out / "vectors.npy")
    assert len(scaled) == len(vectors) == len(origin) == 8 and len({r["id"] for r in scaled}) == 8
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[origin[r["id"]]]["text"] == r["text"] for r in scaled)
    assert (out / "queries.jsonl").read_text(encoding="utf-8") == (base / "queries.jsonl").read_text(encoding="utf-8")


def test_to_origin_counts_each_chunk_once_and_keeps_ranks():
    origin = {"a0": "a", "a1": "a", "b0": "b", "c1": "c"}
    assert to_origin({"q": ["a1", "b0", "a0", "c1"]}, origin) == {"q": ["a", "b", None, "c"]}
    chunks = {"a": {"doc_id": "d", "text": "nothing"}, "b": {"doc_id": "d", "text": "it takes 5 days"},
              "c": {"doc_id": "d", "text": "5 days"}}
    answers = {"q": [GoldAnswer("5 days", None, "d")]}
    mapped = to_origin({"q": ["a0", "a1", "b0", "b0"]}, {**origin, "b0": "b"})
    result = per_query_quality(mapped, ["q"], chunks, answers)["per_query"][0]
    assert result["mrr@10"] == pytest.approx(1 / 3)  # the second copy of a still takes rank 2
    assert result["ndcg@10"] <= 1.0  # the repeated relevant copy does not count twice


def test_exact_dense_and_recall():
    passages = _unit(50, seed=3)
    questions = passages[[7, 21]] + 0.01  # each question nearest to one passage
    ids = [f"p{i}" for i in range(50)]
    exact = exact_dense(passages, questions, ids, ["q1", "q2"], top_k=5)
    assert exact["q1"][0] == "p7" and exact["q2"][0] == "p21" and len(exact["q1"]) == 5
    scores = questions[0].astype(np.float64) @ passages.astype(np.float64).T
    assert exact["q1"] == [ids[j] for j in np.argsort(-scores)[:5]]
    approx = {"q1": exact["q1"][:4] + ["zz"], "q2": exact["q2"]}
    assert recall_at_k(exact, approx, ["q1", "q2"], 5) == pytest.approx((4 / 5 + 1) / 2)
    assert recall_at_k(exact, exact, ["q1", "q2"], 5) == 1.0


def _row(p50: float, hnsw: float | None = None) -> dict:
    quality = {"hit@1": 0.5, "hit@5": 0.5, "hit@10": 0.5, "mrr@10": 0.5, "ndcg@10": 0.5}
    return {"store_s": 12.0, "bm25_build_s": 3.0, "hnsw_build_s": hnsw, "ingest_other_s": 15.0 + (hnsw or 0.0),
            "peak_rss_mb": 1234.0, "p50_ms": p50, "p95_ms": 2 * p50,
            "lists_ms": {"dense": {"p50": 1.0, "p95": 2.0, "mean": 1.2}, "bm25": {"p50": 3.0, "p95": 4.0, "mean": 3.1}},
            "quality": dict.fromkeys(("rankings", "dense", "bm25"), quality), "versions": {"x": "1"}, "notes": ""}


def test_scale_report_gives_the_cost_table_and_fails_loudly_only_for_exact_rows():
    from benchmarks.peers.report_scale import render_scale_markdown

    setup = {"scale": 100_000, "dataset": "covidqa", "queries": 200, "qdrant": "memory", "date": "d", "machine": "m",
             "cpu_count": 2, "load_avg": (1.0, 1.0, 1.0), "python": "3.12", "threads": "1", "chunks": 4222, "docs": 98,
             "copies": 24, "n_docs_scaled": 2352, "jitter": 0.02, "eligible_queries": 1380, "seed": 0}
    comparison = {m: {"mean": 0.0, "low": -0.1, "high": 0.1, "wins": 1, "ties": 2, "losses": 1}
                  for m in ("mrr@10", "ndcg@10", "hit@5")}
    comparisons = {"langchain": {**comparison, "mcnemar_hit@5": {"b": 1, "c": 1, "p": 1.0}}}
    agree = {"n": 200, "identical": 1.0, "same_set": 1.0, "identical_but_ties": 1.0, "first_difference": None,
             "recall": 1.0}
    hnsw = {**agree, "identical": 0.9, "identical_but_ties": 0.9, "recall": 0.98,
            "first_difference": {"qid": "q9", "reference": ["a"], "other": ["b"], "first_rank": 0}}
    summary = {"ours": _row(5.0), "ours-hnsw": _row(3.0, hnsw=90.0), "langchain": _row(300.0)}
    text = render_scale_markdown(setup, summary, comparisons, {"ours": agree, "ours-hnsw": hnsw, "langchain": agree})
    assert "| ours-hnsw | 12.0 | 3.0 | 90.0 | 105.0 | 1,234 | 3.0 / 6.0 | 1.0 / 2.0 | 3.0 / 4.0 |" in text
    assert "| ours-hnsw | 90.0% | 90.0% | 0.9800 | query q9, rank 1 |" in text
    assert "FAILED" not in text  # an approximate index may differ from the exact search
    broken = render_scale_markdown(setup, summary, comparisons, {"ours": agree, "ours-hnsw": hnsw,
                                                                 "langchain": {**hnsw, "recall": 0.99}})
    assert "FAILED: an exact row's dense lists differ from the exact search: langchain" in broken
