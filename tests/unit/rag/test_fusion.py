"""Convex fusion: min-max scaling, the fused scores against hand-computed values, shares and
weights, and the fused order when one list cannot tell its candidates apart; RRF one setting away;
the removed confidence fusion falls back to convex with a warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from eval.ablations import EvalConfig, parse_config
from rag.errors import ConfigError, InvalidRequest
from rag.fusion import RankedList, convex, min_max, rrf
from rag.retrieval import HybridRetriever
from rag.settings import load_settings
from rag.transforms import Variant
from rag.types import ScoredId
from tests.unit.kb_fixtures import KB, build_services


def ranked(name: str, pairs: list[tuple[str, float]], weight: float = 1.0, variant: str = "original") -> RankedList:
    return RankedList(name, variant, [ScoredId(c, s) for c, s in pairs], weight)


def test_min_max_scales_each_list_to_its_own_head():
    assert min_max(ranked("bm25", [("a", 12.0), ("b", 7.0), ("c", 2.0)])) == {
        "a": (12.0, 1.0), "b": (7.0, 0.5), "c": (2.0, 0.0)}
    # a repeated chunk keeps its first score; a flat or one-item list is all at the top; empty stays empty
    assert min_max(ranked("dense", [("a", 0.9), ("b", 0.7), ("a", 0.5)])) == {"a": (0.9, 1.0), "b": (0.7, 0.0)}
    assert min_max(ranked("bm25", [("a", 4.0), ("b", 4.0)])) == {"a": (4.0, 1.0), "b": (4.0, 1.0)}
    assert min_max(ranked("bm25", [])) == {}


def test_convex_adds_shares_of_scaled_scores_and_keeps_provenance():
    dense = ranked("dense", [("a", 0.90), ("b", 0.85), ("c", 0.70)])
    bm25 = ranked("bm25", [("c", 20.0), ("a", 12.0), ("d", 4.0)])
    fused = convex([dense, bm25], {"dense": 0.4, "bm25": 0.6})
    scores = {f.chunk_id: f.score for f in fused}
    assert scores == pytest.approx({"a": 0.4 * 1.0 + 0.6 * 0.5, "b": 0.4 * 0.75, "c": 0.6 * 1.0, "d": 0.0})
    assert [f.chunk_id for f in fused] == ["a", "c", "b", "d"]
    assert [(p.list_name, p.rank, p.score) for p in fused[0].provenance] == [("dense", 1, 0.90), ("bm25", 2, 12.0)]
    # the list weight multiplies its share; a list without a share counts fully; limit cuts
    heavy = convex([dense, RankedList("bm25", "original", bm25.items, 2.0)], {"dense": 0.4, "bm25": 0.6}, limit=2)
    assert [f.chunk_id for f in heavy] == ["c", "a"] and heavy[0].score == pytest.approx(1.2)
    assert convex([ranked("other", [("x", 3.0), ("y", 1.0)])], {})[0].score == pytest.approx(1.0)


def test_convex_ties_break_by_best_rank_then_chunk_id():
    one = ranked("dense", [("b", 1.0), ("a", 0.0)])
    two = ranked("bm25", [("a", 5.0), ("b", 0.0)])
    assert [f.chunk_id for f in convex([one, two], {"dense": 0.5, "bm25": 0.5})] == ["a", "b"]


def test_convex_with_no_dense_share_is_the_bm25_order():
    dense = ranked("dense", [(c, s) for c, s in zip("abc", (0.9, 0.8, 0.7))])
    bm25 = ranked("bm25", [(c, s) for c, s in zip("cba", (9.0, 5.0, 1.0))])
    assert [f.chunk_id for f in convex([dense, bm25], {"dense": 0.0, "bm25": 1.0})] == list("cba")
    assert [f.chunk_id for f in convex([dense, bm25], {"dense": 1.0, "bm25": 0.0})] == list("abc")


class FlatBM25KB:
    """Dense singles out "d"; BM25 scores every candidate the same (e.g. same-topic passages)."""

    def embed_queries(self, texts):
        return np.ones((len(texts), 4), dtype=np.float32)

    def search_dense(self, vector, limit, flt=None):
        return [ScoredId(c, s) for c, s in zip("dcbae", (0.95, 0.80, 0.79, 0.78, 0.77))][:limit]

    def search_bm25(self, query, limit, flt=None):
        return [ScoredId(c, 4.0) for c in "abcde"][:limit]

    def get_chunks(self, ids):  # pragma: no cover - not needed here
        return {}


def test_retriever_fuses_by_scores_by_default_and_rrf_is_selectable():
    variants = [Variant("original", "q")]
    by_scores = HybridRetriever(top_k=5).search(FlatBM25KB(), variants)
    assert [f.chunk_id for f in by_scores] == list("dcbae")  # a flat list adds the same to every chunk
    plain = HybridRetriever(top_k=5, fusion="rrf").search(FlatBM25KB(), variants)
    assert [f.chunk_id for f in plain] == list("adbce")  # the flat list's arbitrary order pulls "a" up
    assert {p.list_name for p in by_scores[0].provenance} == {"dense", "bm25"}  # provenance kept
    with pytest.raises(InvalidRequest) as err:
        HybridRetriever(fusion_alpha=1.5)
    assert err.value.field == "fusion_alpha"


def test_each_query_variant_adds_its_own_scaled_lists():
    retriever = HybridRetriever(top_k=5, fusion_alpha=0.5)
    variants = [Variant("original", "q"), Variant("multi_query:1", "q2", weight=0.5)]
    fused = retriever.search(FlatBM25KB(), variants)
    # each variant: dense 0.5 x scaled + bm25 0.5 x 1; the second variant at half weight
    assert fused[0].chunk_id == "d" and fused[0].score == pytest.approx((0.5 + 0.5) * 1.5)
    assert len(fused[0].provenance) == 4


def test_pipeline_reports_its_fusion_and_rrf_can_be_asked_for(tmp_path):
    services = build_services(tmp_path)
    pipeline = services.pipeline
    assert pipeline.retrieve("how long is the warranty", KB, limit=3).info["fusion"] == "convex"
    plain = pipeline.retrieve("how long is the warranty", KB, limit=3, fusion="rrf")
    assert plain.info["fusion"] == "rrf"
    assert plain.hits[0].score == pytest.approx(sum(1 / (60 + p.rank) for p in plain.hits[0].provenance))
    with pytest.raises(InvalidRequest) as err:
        pipeline.retrieve("how long is the warranty", KB, fusion="confidence")
    assert err.value.field == "fusion"


def test_the_removed_confidence_fusion_falls_back_to_convex_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("RAG_FUSION", "confidence")
    monkeypatch.setenv("RAG_FUSION_POWER", "16")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.fusion == "convex" and settings.fusion_alpha == 0.4
    assert "RAG_FUSION_POWER" in caplog.text and "'confidence'" in caplog.text
    with pytest.raises(ConfigError) as err:
        load_settings(fusion="magic")
    assert err.value.field == "fusion"


def test_eval_configs_name_their_fusion():
    assert parse_config("hybrid") == EvalConfig("hybrid", "hybrid", fusion="convex")
    assert parse_config("hybrid+rrf") == EvalConfig("hybrid+rrf", "hybrid", fusion="rrf")
    assert parse_config("hybrid+rerank+rrf").rerank
    with pytest.raises(ConfigError):
        parse_config("hybrid+rrf+convex")
