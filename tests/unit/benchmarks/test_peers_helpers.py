"""The pure helpers of the side-by-side benchmark (benchmarks/peers): run order, spread, scoring,
paired comparisons, the dense-list check, the vector cache and the report (no peers venv needed)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.peers.harness import CachedPassages, list_pass
from benchmarks.peers.report import render_markdown
from benchmarks.peers.stats import (
    list_agreement,
    mcnemar_exact,
    paired_comparison,
    per_query_quality,
    rankings_stable,
    round_order,
    spread,
)
from eval.datasets import GoldAnswer

SYSTEMS = ["ours", "langchain", "llamaindex"]


def test_round_order_is_a_seeded_shuffle_that_varies_by_round():
    orders = [round_order(SYSTEMS, 0, r) for r in range(1, 9)]
    assert all(sorted(o) == sorted(SYSTEMS) for o in orders)
    assert orders == [round_order(SYSTEMS, 0, r) for r in range(1, 9)]  # reproducible
    assert len({tuple(o) for o in orders}) > 1  # not always the same order
    assert {o[0] for o in orders} != {"ours"}  # ours is not always first


def test_spread_reports_median_min_max():
    assert spread([3.0, 1.0, 2.0, 10.0, 4.0]) == {"median": 3.0, "min": 1.0, "max": 10.0}


def _chunks():
    return {"a": {"doc_id": "d1", "text": "The incubation period is 5 days."},
            "b": {"doc_id": "d1", "text": "Nothing relevant here."},
            "c": {"doc_id": "d2", "text": "The incubation period is 5 days."}}  # right text, wrong document


def test_per_query_quality_scores_by_gold_document_and_answer_text():
    answers = {"q1": [GoldAnswer("5 days", None, "d1")], "q2": [GoldAnswer("5 days", None, "d1")]}
    rankings = {"q1": ["b", "a"], "q2": ["c", "b"]}
    result = per_query_quality(rankings, ["q1", "q2"], _chunks(), answers)
    q1, q2 = result["per_query"]
    assert q1["hit@1"] == 0.0 and q1["hit@5"] == 1.0 and q1["mrr@10"] == pytest.approx(0.5)
    assert q2["hit@5"] == 0.0 and q2["mrr@10"] == 0.0  # chunk c is from another document
    assert result["aggregate"]["mrr@10"] == pytest.approx(0.25)


def test_mcnemar_counts_discordant_pairs_and_uses_the_exact_binomial():
    ours = [1, 1, 1, 1, 1, 1, 0, 1, 0, 0]
    peer = [0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
    result = mcnemar_exact(ours, peer)
    assert (result["b"], result["c"]) == (6, 1)
    assert result["p"] == pytest.approx(2 * (1 + 7) / 2**7)  # two-sided: P(X<=1) + P(X>=6), n=7
    assert mcnemar_exact([1, 0], [1, 0]) == {"b": 0, "c": 0, "p": 1.0}
    with pytest.raises(ValueError):
        mcnemar_exact([1], [1, 0])


def test_paired_comparison_is_ours_minus_peer():
    ours = [{"mrr@10": 1.0, "ndcg@10": 1.0, "hit@5": 1.0}] * 20
    peer = [{"mrr@10": 0.5, "ndcg@10": 0.6, "hit@5": 0.0}] * 10 + [{"mrr@10": 1.0, "ndcg@10": 1.0, "hit@5": 1.0}] * 10
    result = paired_comparison(ours, peer, resamples=500)
    assert result["mrr@10"]["mean"] == pytest.approx(0.25)
    assert result["mrr@10"]["wins"] == 10 and result["mrr@10"]["losses"] == 0
    assert result["hit@5"]["low"] > 0.0  # every resample favours ours
    assert result["mcnemar_hit@5"]["b"] == 10 and result["mcnemar_hit@5"]["c"] == 0


def test_list_agreement_tells_order_from_set_differences_and_names_the_first():
    ref = {"q1": ["a", "b", "c"], "q2": ["a", "b", "c"], "q3": ["a", "b", "c"]}
    other = {"q1": ["a", "b", "c"], "q2": ["a", "c", "b"], "q3": ["a", "b", "x"]}
    result = list_agreement(ref, other, ["q1", "q2", "q3"])
    assert result["identical"] == pytest.approx(1 / 3)
    assert result["same_set"] == pytest.approx(2 / 3)
    assert result["first_difference"] == {"qid": "q2", "reference": ["a", "b", "c"], "other": ["a", "c", "b"],
                                          "first_rank": 1}
    assert list_agreement(ref, ref, list(ref))["first_difference"] is None


def test_rankings_stable():
    assert rankings_stable([{"q": ["a", "b"]}, {"q": ["a", "b"]}])
    assert not rankings_stable([{"q": ["a", "b"]}, {"q": ["b", "a"]}])


def test_cached_passages_look_vectors_up_by_text(tmp_path):
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.save(tmp_path / "v.npy", vectors)
    rows = [{"text": "x"}, {"text": "y"}, {"text": "z"}]
    cache = CachedPassages(rows, str(tmp_path / "v.npy"))
    assert cache(["z", "x"]).tolist() == [[4.0, 5.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="3 vectors for 2 rows"):
        CachedPassages(rows[:2], str(tmp_path / "v.npy"))


def test_list_pass_collects_and_times_each_list_per_query_and_can_be_skipped():
    queries = [{"qid": "1", "question": "a"}, {"qid": "2", "question": "b"}]
    lists = {"dense": lambda q: [q + "d"], "bm25": lambda q: [q + "b"]}
    out = list_pass(lists, queries)
    assert {k: out[k] for k in ("dense", "bm25")} == {"dense": {"1": ["ad"], "2": ["bd"]},
                                                      "bm25": {"1": ["ab"], "2": ["bb"]}}
    assert len(out["dense_latency_s"]) == len(out["bm25_latency_s"]) == 2
    assert all(t >= 0.0 for t in out["dense_latency_s"] + out["bm25_latency_s"])
    assert list_pass(lists, queries, skip=True) == {"dense": {}, "bm25": {}}


def test_cached_passages_give_each_copy_of_a_repeated_text_its_own_row_in_order(tmp_path):
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.save(tmp_path / "v.npy", vectors)
    rows = [{"text": "x"}, {"text": "y"}, {"text": "x"}, {"text": "x"}]  # x: rows 0, 2, 3
    cache = CachedPassages(rows, str(tmp_path / "v.npy"))
    assert cache(["x", "y", "x"]).tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert cache(["x", "x", "y"]).tolist() == [[6.0, 7.0], [0.0, 1.0], [2.0, 3.0]]  # third copy, then round again


def _summary(process: str, mrr: float) -> dict:
    quality = {"hit@1": mrr, "hit@5": mrr, "hit@10": mrr, "mrr@10": mrr, "ndcg@10": mrr}
    return {"ingest_s": {"median": 10.0, "min": 9.0, "max": 12.0}, "ingest_embed_s": 9.5, "ingest_other_s": 0.5,
            "bm25_build_s": None, "peak_rss_mb": 300.0, "p50_ms": 20.0, "p95_ms": 30.0,
            "p50_ms_rounds": {"median": 20.0, "min": 19.0, "max": 22.0}, "query_embed_p50_ms": 17.0,
            "other_p50_ms": 3.0, "other_p95_ms": 5.0, "quality": dict.fromkeys(("rankings", "dense", "bm25"), quality),
            "stable": dict.fromkeys(("rankings", "dense", "bm25"), True), "notes": "", "versions": {"x": "1"},
            "process": process}


def test_report_flags_differing_dense_lists_loudly():
    setup = {"phase": "timing", "orders": [["langchain", "ours"]], "dataset": "covidqa", "lang": "en", "date": "d",
             "machine": "m", "cpu_count": 2, "load_avg": (1.0, 1.0, 1.0), "python": "3.11", "docs": 1, "seed": 0,
             "chunks": 2, "chunk_chars": 10, "queries": 2, "eligible_queries": 2, "vectors": "live", "top_k": 10,
             "qdrant": "disk", "rounds": 1, "threads": "1"}
    summary = {"ours": _summary("ours", 0.8), "langchain": _summary("langchain", 0.6)}
    cmp = paired_comparison([{"mrr@10": 0.8, "ndcg@10": 0.8, "hit@5": 1.0}] * 5,
                            [{"mrr@10": 0.6, "ndcg@10": 0.6, "hit@5": 1.0}] * 5, resamples=100)
    dense = {"langchain": {"n": 2, "identical": 0.5, "same_set": 1.0,
                           "first_difference": {"qid": "q2", "reference": ["a", "b"], "other": ["b", "a"],
                                                "first_rank": 0}}}
    text = render_markdown(setup, summary, {"langchain": cmp}, dense)
    assert "FAILED: the dense lists are NOT identical" in text
    assert "first difference: query q2 at rank 1" in text
    assert "+0.200 [+0.200, +0.200] *" in text  # MRR difference ours - langchain, interval excludes 0
    assert "9.0–12.0" in text  # the per-round spread
    ok = render_markdown(setup, summary, {"langchain": cmp}, {"langchain": {**dense["langchain"], "identical": 1.0,
                                                                             "first_difference": None}})
    assert "FAILED" not in ok and "Passed" in ok


def test_dense_check_forgives_exact_ties_between_chunks_with_the_same_text():
    from benchmarks.peers.stats import tie_classes

    chunks = {"a": {"text": "dup"}, "b": {"text": "dup"}, "c": {"text": "other"}}
    ties = tie_classes(chunks)
    assert ties == {"a": "a", "b": "a", "c": "c"}
    ref, other = {"q": ["a", "b", "c"]}, {"q": ["b", "a", "c"]}
    result = list_agreement(ref, other, ["q"], ties=ties)
    assert result["identical"] == 0.0 and result["identical_but_ties"] == 1.0
    swapped = list_agreement({"q": ["a", "c"]}, {"q": ["c", "a"]}, ["q"], ties=ties)
    assert swapped["identical_but_ties"] == 0.0  # a real difference stays one


def test_dense_check_forgives_float32_near_ties_when_told():
    ref, other = {"q": ["a", "b", "c"]}, {"q": ["b", "a", "c"]}
    scores = {"a": 0.8798430475, "b": 0.8798429980, "c": 0.5}
    near = lambda qid, x, y: abs(scores[x] - scores[y]) <= 1e-6  # noqa: E731
    assert list_agreement(ref, other, ["q"], near_tie=near)["identical_but_ties"] == 1.0
    assert list_agreement({"q": ["a", "c"]}, {"q": ["c", "a"]}, ["q"], near_tie=near)["identical_but_ties"] == 0.0
