"""Confidence-weighted RRF: the list confidence against hand-computed values, the weights it
gives, and the fused order when one list cannot tell its candidates apart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.ablations import EvalConfig, parse_config
from rag.errors import ConfigError, InvalidRequest
from rag.fusion import RankedList, confidence_weights, list_confidence, rrf, top_overlap
from rag.retrieval import HybridRetriever
from rag.transforms import Variant
from rag.types import ScoredId
from tests.unit.kb_fixtures import KB, build_services


def ranked(name: str, pairs: list[tuple[str, float]], weight: float = 1.0, variant: str = "original") -> RankedList:
    return RankedList(name, variant, [ScoredId(c, s) for c, s in pairs], weight)


def test_list_confidence_is_the_standardised_top_margin():
    # rest = [3, 2, 1]: mean 2, population std sqrt(2/3); top 5 -> (5 - 2) / 0.8165
    assert list_confidence([5.0, 3.0, 2.0, 1.0]) == pytest.approx(3 / math.sqrt(2 / 3))
    # only the first `depth` scores count
    assert list_confidence([5.0, 3.0, 2.0, 1.0, -50.0], depth=4) == pytest.approx(3 / math.sqrt(2 / 3))


def test_list_confidence_ignores_scale_and_offset():
    scores = [0.91, 0.84, 0.83, 0.80, 0.79, 0.78]
    moved = [100 + 40 * s for s in scores]
    assert list_confidence(moved) == pytest.approx(list_confidence(scores))


def test_list_confidence_flat_short_and_standout_heads():
    assert list_confidence([0.8, 0.8, 0.8, 0.8]) == 0.0
    assert list_confidence([2.0, 1.0]) is None
    assert list_confidence([]) is None
    assert list_confidence([5.0, 1.0, 1.0, 1.0]) == math.inf
    assert list_confidence([1.0, 2.0, 3.0]) == 0.0  # a top below the rest is no evidence at all


def test_flat_list_is_silenced_and_the_other_list_decides():
    dense = ranked("dense", [("a", 0.8), ("b", 0.8), ("c", 0.8), ("d", 0.8)])  # cannot tell them apart
    bm25 = ranked("bm25", [("d", 9.0), ("c", 3.0), ("b", 2.9), ("x", 2.8)])
    weighted = confidence_weights([dense, bm25])
    assert [r.weight for r in weighted] == [0.0, 1.0]
    assert [f.chunk_id for f in rrf(weighted)][:4] == ["d", "c", "b", "x"]
    assert [f.chunk_id for f in rrf(weighted)][4] == "a"  # only the silenced list found it
    # plain RRF lets the flat list reorder: "b" (2nd in dense, 3rd in bm25) passes "c"
    assert [f.chunk_id for f in rrf([dense, bm25])] == ["d", "b", "c", "a", "x"]


def test_weights_follow_the_confidence_ratio_to_the_power():
    sure = ranked("dense", [("a", 10.0), ("b", 2.0), ("c", 1.0), ("d", 0.0)], weight=2.0)
    unsure = ranked("bm25", [("b", 4.0), ("a", 3.5), ("c", 3.0), ("d", 2.5)])
    c_sure, c_unsure = list_confidence([10.0, 2.0, 1.0, 0.0]), list_confidence([4.0, 3.5, 3.0, 2.5])
    weighted = confidence_weights([sure, unsure], power=2.0, agreement_depth=0)
    assert weighted[0].weight == pytest.approx(2.0)  # the most confident list keeps its weight
    assert weighted[1].weight == pytest.approx((c_unsure / c_sure) ** 2)
    assert [r.items for r in weighted] == [sure.items, unsure.items]
    assert [r.weight for r in confidence_weights([sure, unsure], power=0.0, agreement_depth=0)] == [2.0, 1.0]


def test_equally_confident_lists_fuse_as_plain_rrf():
    one = ranked("dense", [("a", 0.9), ("b", 0.8), ("c", 0.7)])
    two = ranked("bm25", [("c", 30.0), ("a", 20.0), ("b", 10.0)])
    weighted, plain = rrf(confidence_weights([one, two])), rrf([one, two])
    assert [f.chunk_id for f in weighted] == [f.chunk_id for f in plain] == ["a", "c", "b"]
    assert [f.score for f in weighted] == pytest.approx([f.score for f in plain])


def test_short_lists_keep_their_weight_and_no_confidence_changes_nothing():
    short = ranked("bm25", [("a", 3.0)], weight=0.5)
    flat = ranked("dense", [("a", 0.5), ("b", 0.5), ("c", 0.5)])
    assert [r.weight for r in confidence_weights([short, flat])] == [0.5, 1.0]
    standout = ranked("dense", [("a", 5.0), ("b", 1.0), ("c", 1.0)])
    graded = ranked("bm25", [("b", 3.0), ("c", 2.0), ("a", 1.0)])
    assert [r.weight for r in confidence_weights([standout, graded], agreement_depth=0)] == [1.0, 0.0]
    # the same three chunks at the top of both: full agreement, so the graded list keeps its weight
    assert [r.weight for r in confidence_weights([standout, graded], agreement_depth=3)] == [1.0, 1.0]


def test_top_overlap_counts_shared_head_chunks_over_the_shorter_head():
    a = ranked("dense", [("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 0.5)])
    b = ranked("bm25", [("c", 9.0), ("x", 8.0), ("a", 7.0)])
    assert top_overlap(a, b, depth=4) == pytest.approx(2 / 3)
    assert top_overlap(a, b, depth=1) == 0.0
    assert top_overlap(a, ranked("bm25", []), depth=4) == 0.0


def test_agreeing_lists_keep_their_weights_and_disagreeing_ones_give_way():
    sure = ranked("dense", [("a", 10.0), ("b", 2.0), ("c", 1.0), ("d", 0.0)])
    c_sure = list_confidence([10.0, 2.0, 1.0, 0.0])
    same_head = ranked("bm25", [("b", 4.0), ("a", 3.5), ("d", 3.0), ("c", 2.5)])
    c_unsure = list_confidence([4.0, 3.5, 3.0, 2.5])
    assert [r.weight for r in confidence_weights([sure, same_head], power=8.0, agreement_depth=4)] == [1.0, 1.0]
    half = ranked("bm25", [("b", 4.0), ("a", 3.5), ("x", 3.0), ("y", 2.5)])
    weights = [r.weight for r in confidence_weights([sure, half], power=8.0, agreement_depth=4)]
    assert weights == pytest.approx([1.0, (c_unsure / c_sure) ** 4.0])  # half the head shared: half the power
    other = ranked("bm25", [("w", 4.0), ("x", 3.5), ("y", 3.0), ("z", 2.5)])
    weights = [r.weight for r in confidence_weights([sure, other], power=8.0, agreement_depth=4)]
    assert weights == pytest.approx([1.0, (c_unsure / c_sure) ** 8.0])
    flat = ranked("bm25", [("b", 1.0), ("a", 1.0), ("d", 1.0), ("c", 1.0)])  # same chunks, no order
    assert [r.weight for r in confidence_weights([sure, flat], power=8.0, agreement_depth=4)] == [1.0, 0.0]


def test_bad_parameters():
    with pytest.raises(ValueError):
        confidence_weights([], power=-1.0)
    with pytest.raises(ValueError):
        confidence_weights([], depth=2)
    with pytest.raises(ValueError):
        confidence_weights([], agreement_depth=-1)


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


def test_retriever_follows_the_confident_list_by_default_and_rrf_is_selectable():
    variants = [Variant("original", "q")]
    confident = HybridRetriever(top_k=5).search(FlatBM25KB(), variants)
    assert [f.chunk_id for f in confident] == list("dcbae")
    plain = HybridRetriever(top_k=5, fusion="rrf").search(FlatBM25KB(), variants)
    assert [f.chunk_id for f in plain] == list("adbce")  # the flat list's arbitrary order pulls "a" up
    assert {p.list_name for p in confident[0].provenance} == {"dense", "bm25"}  # provenance kept


def test_confidence_is_weighed_within_each_query_variant():
    kb = FlatBM25KB()
    retriever = HybridRetriever(top_k=5)
    lists = [ranked("dense", [(c, s) for c, s in zip("dcbae", (0.95, 0.8, 0.79, 0.78, 0.77))], variant="original"),
             ranked("bm25", [(c, 4.0) for c in "abcde"], variant="original"),
             ranked("bm25", [("e", 9.0), ("a", 2.0), ("b", 1.0)], variant="multi_query:1")]
    weighted = retriever._confidence_weighted(lists)
    # the flat BM25 list loses to its own variant's dense list; the lone list of another variant keeps its weight
    assert [r.weight for r in weighted] == [1.0, 0.0, 1.0]


def test_pipeline_reports_its_fusion_and_rrf_can_be_asked_for(tmp_path):
    services = build_services(tmp_path)
    pipeline = services.pipeline
    assert pipeline.retrieve("how long is the warranty", KB, limit=3).info["fusion"] == "confidence"
    plain = pipeline.retrieve("how long is the warranty", KB, limit=3, fusion="rrf")
    assert plain.info["fusion"] == "rrf"
    assert plain.hits[0].score == pytest.approx(sum(1 / (60 + p.rank) for p in plain.hits[0].provenance))
    with pytest.raises(InvalidRequest) as err:
        pipeline.retrieve("how long is the warranty", KB, fusion="magic")
    assert err.value.field == "fusion"


def test_eval_configs_name_their_fusion():
    assert parse_config("hybrid") == EvalConfig("hybrid", "hybrid", fusion="confidence")
    assert parse_config("hybrid+rrf") == EvalConfig("hybrid+rrf", "hybrid", fusion="rrf")
    assert parse_config("hybrid+rerank+rrf").rerank
    with pytest.raises(ConfigError):
        parse_config("hybrid+rrf+confidence")
