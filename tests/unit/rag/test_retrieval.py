"""Hybrid retrieval: RRF against hand-computed ranks, provenance, weights, modes and filters
applied identically to dense and BM25 (on both vector backends)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import InvalidRequest, NotFound
from rag.retrieval import HybridRetriever, parse_filter
from rag.transforms import Variant
from rag.types import Chunk, Filter, ScoredId
from tests.unit.kb_fixtures import JAN_2024, JUN_2024, KB, build_services, router


class SpyKB:
    """Fixed ranked lists; records every call."""

    def __init__(self, dense: list[str], bm25: list[str], missing: tuple[str, ...] = ()) -> None:
        self.dense, self.bm25, self.missing = dense, bm25, missing
        self.calls: list[tuple] = []

    def embed_queries(self, texts):
        self.calls.append(("embed", list(texts)))
        return np.ones((len(texts), 4), dtype=np.float32)

    def search_dense(self, vector, limit, flt=None):
        self.calls.append(("dense", limit, flt))
        return [ScoredId(c, 1.0 - i / 10) for i, c in enumerate(self.dense[:limit])]

    def search_bm25(self, query, limit, flt=None):
        self.calls.append(("bm25", query, limit, flt))
        return [ScoredId(c, 10.0 - i) for i, c in enumerate(self.bm25[:limit])]

    def get_chunks(self, ids):
        return {i: Chunk(i, "kb", "d", "s.txt", f"text {i}", 0, 6) for i in ids if i not in self.missing}


def test_rrf_matches_hand_computed_ranks():
    kb = SpyKB(dense=["a", "b", "c"], bm25=["c", "a", "d"])
    fused = HybridRetriever(top_k=3, fusion="rrf").search(kb, [Variant("original", "q")])
    scores = {f.chunk_id: f.score for f in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [f.chunk_id for f in fused] == ["a", "c", "b", "d"]
    prov = {(p.list_name, p.rank) for p in fused[1].provenance}
    assert prov == {("dense", 3), ("bm25", 1)}


def test_list_and_variant_weights_and_rrf_constant():
    kb = SpyKB(dense=["a", "b"], bm25=["b", "a"])
    retriever = HybridRetriever(top_k=2, rrf_k=10, weights={"dense": 2.0, "bm25": 0.5}, fusion="rrf")
    fused = retriever.search(kb, [Variant("original", "q", weight=3.0), Variant("multi_query:1", "q2")])
    scores = {f.chunk_id: f.score for f in fused}
    # original: dense a1 b2 (x2 x3), bm25 b1 a2 (x0.5 x3); variant: same lists with weight 1
    assert scores["a"] == pytest.approx((6 + 2) / 11 + (1.5 + 0.5) / 12)
    assert scores["b"] == pytest.approx((6 + 2) / 12 + (1.5 + 0.5) / 11)
    assert {p.variant for p in fused[0].provenance} == {"original", "multi_query:1"}


def test_dense_variants_embedded_in_one_batch_and_hyde_dense_only():
    kb = SpyKB(dense=["a"], bm25=["b"])
    variants = [Variant("original", "q"), Variant("multi_query:1", "q1"), Variant("hyde", "passage", ("dense",))]
    fused = HybridRetriever().search(kb, variants)
    embeds = [c for c in kb.calls if c[0] == "embed"]
    assert embeds == [("embed", ["q", "q1", "passage"])]
    assert [c[1] for c in kb.calls if c[0] == "bm25"] == ["q", "q1"]  # HyDE text never hits BM25
    hyde = [p for f in fused for p in f.provenance if p.variant == "hyde"]
    assert hyde and all(p.list_name == "dense" for p in hyde)


@pytest.mark.parametrize("mode,lists", [("dense", {"dense"}), ("bm25", {"bm25"}), ("hybrid", {"dense", "bm25"})])
def test_modes_search_only_their_lists(mode, lists):
    kb = SpyKB(dense=["a"], bm25=["b"])
    fused = HybridRetriever().search(kb, [Variant("original", "q")], mode=mode)
    assert {p.list_name for f in fused for p in f.provenance} == lists
    assert (("embed", ["q"]) in kb.calls) == ("dense" in lists)


def test_zero_weight_list_is_not_searched():
    kb = SpyKB(dense=["a"], bm25=["b"])
    HybridRetriever(weights={"dense": 0.0}).search(kb, [Variant("original", "q")])
    assert not any(c[0] in ("embed", "dense") for c in kb.calls)


def test_same_filter_reaches_both_lists_and_missing_chunks_are_dropped():
    kb = SpyKB(dense=["a", "b"], bm25=["b", "c"], missing=("c",))
    flt = Filter(sources=("s.txt",), tags=("team=hr",))
    retriever = HybridRetriever(top_k=5)
    fused = retriever.search(kb, [Variant("original", "q")], flt=flt)
    used = [c[-1] for c in kb.calls if c[0] in ("dense", "bm25")]
    assert used == [flt, flt]
    assert [h.chunk.id for h in retriever.hits(kb, fused)] == ["b", "a"]


def test_pipeline_provenance_and_scores(tmp_path):
    services = build_services(tmp_path, llm=ScriptedLLM(router(multi_query="warranty period\nwarranty duration")))
    result = services.pipeline.retrieve("how long is the warranty", KB, transforms=["multi_query"], limit=3,
                                        fusion="rrf")
    top = result.hits[0]
    assert top.chunk.id == "warranty"
    assert top.score == pytest.approx(sum(1 / (60 + p.rank) for p in top.provenance))
    variants = {p.variant for p in top.provenance}
    assert {"original", "multi_query:1", "multi_query:2"} <= variants
    assert {p.list_name for p in top.provenance} == {"dense", "bm25"}
    assert [v["label"] for v in result.variants] == ["original", "multi_query:1", "multi_query:2"]
    assert services.embedder_resolution.embedder.calls[-1] == 3  # one batch for the three dense variants
    assert len(result.hits) == 3
    for stage in ("condense", "transform", "embed", "dense", "bm25", "fusion", "rerank"):
        assert stage in result.timings


@pytest.mark.parametrize("backend", ["local", "edge"])
@pytest.mark.parametrize("pairs,expected", [
    (["team=hr"], {"leave", "sick"}),
    (["tag=team=support", "source=acme-x200-manual.pdf"], {"warranty", "battery", "reset"}),
    (["source=security-policy.html", "source=员工休假制度.md"], {"passwords", "vpn", "leave", "sick"}),
    (["doc_id=doc-security-policy.html"], {"passwords", "vpn"}),
    ([f"mtime_from={int(JUN_2024)}"], {"passwords", "vpn", "leave", "sick"}),
    (["mtime_to=2024-01-01"], {"warranty", "battery", "reset"}),
])
def test_filters_apply_to_dense_and_bm25(tmp_path, backend, pairs, expected):
    services = build_services(tmp_path, backend=backend)
    pipeline = services.pipeline
    flt = parse_filter(pairs)
    for mode in ("dense", "bm25"):
        # words shared by every document so BM25 finds candidates everywhere
        result = pipeline.retrieve("Acme X200 passwords VPN 年假 病假 员工 warranty battery", KB, flt=flt, mode=mode,
                                   limit=20)
        found = {h.chunk.id for h in result.hits}
        assert found and found <= expected, (mode, found)
    hybrid = pipeline.retrieve("warranty passwords 年假 VPN battery reset 病假", KB, flt=flt, limit=20)
    assert {h.chunk.id for h in hybrid.hits} == expected
    assert hybrid.info["filter"] is not None


def test_parse_filter_forms():
    flt = parse_filter(["source=a.pdf", "source=b.pdf", "doc_id=d1", "tag=team=hr", "lang=zh",
                        "mtime_from=2024-01-01", "mtime_to=2024-01-31"])
    assert flt.sources == ("a.pdf", "b.pdf") and flt.doc_ids == ("d1",)
    assert flt.tags == ("team=hr", "lang=zh")
    assert flt.mtime_from == datetime(2024, 1, 1).timestamp()
    assert flt.mtime_to == pytest.approx(datetime(2024, 2, 1).timestamp() - 1e-6)  # the whole last day
    assert parse_filter(["mtime_from=1700000000"]).mtime_from == 1700000000.0
    assert parse_filter(["after=2024-01-01T00:00:00Z"]).mtime_from == JAN_2024
    assert parse_filter([]).is_empty()


@pytest.mark.parametrize("bad,needle", [
    ("source", "source"), ("=x", "=x"), ("team=", "team="), ("tag=hr", "tag=hr"),
    ("mtime_from=yesterday", "yesterday"),
])
def test_parse_filter_errors_name_the_pair(bad, needle):
    with pytest.raises(InvalidRequest) as err:
        parse_filter([bad])
    assert needle in err.value.message and err.value.field == "filter"


def test_parse_filter_rejects_inverted_range():
    with pytest.raises(InvalidRequest, match="after"):
        parse_filter(["mtime_from=2024-02-01", "mtime_to=2024-01-01"])


@pytest.mark.parametrize("kwargs,field", [
    ({"question": "  "}, "question"), ({"mode": "fuzzy"}, "mode"), ({"transforms": ["magic"]}, "transforms"),
    ({"top_k": 0}, "top_k"), ({"limit": 5000}, "limit"), ({"history": [{"role": "bot"}]}, "history"),
])
def test_bad_requests(tmp_path, kwargs, field):
    pipeline = build_services(tmp_path).pipeline
    args = {"question": "warranty", **kwargs}
    with pytest.raises(InvalidRequest) as err:
        pipeline.retrieve(args.pop("question"), KB, **args)
    assert err.value.field == field


def test_unknown_kb(tmp_path):
    with pytest.raises(NotFound, match="nope"):
        build_services(tmp_path).pipeline.retrieve("warranty", "nope")


class TitleSearcher:
    """A third retrieval list: ranks by a fixed order, batch first."""

    def search(self, kb, texts, top_k, flt, timings):
        timings["title_lookup"] = 0.0
        return [[ScoredId("d", 1.0), ScoredId("a", 0.5)][:top_k] for _ in texts]


def test_lists_are_a_mapping_of_named_searchers_with_weights_and_timings_by_name():
    from rag.names import BM25, DENSE, HYBRID, LISTS, MODES
    from rag.retrieval import SEARCHERS

    assert tuple(SEARCHERS) == LISTS and MODES == (HYBRID, *LISTS)
    kb = SpyKB(dense=["a", "b"], bm25=["b", "c"])
    retriever = HybridRetriever(top_k=2, fusion="rrf", searchers={**SEARCHERS, "title": TitleSearcher()},
                                weights={DENSE: 1.0, BM25: 1.0, "title": 2.0})
    timings: dict[str, float] = {}
    fused = retriever.search(kb, [Variant("original", "q", (DENSE, BM25, "title"))], timings=timings)
    assert {DENSE, BM25, "title", "embed", "title_lookup", "fusion"} <= set(timings)
    by_id = {f.chunk_id: f for f in fused}
    assert by_id["d"].score == pytest.approx(2 / 61)  # the title list's weight 2, rank 1
    assert [p.list_name for p in by_id["d"].provenance] == ["title"]
    only = retriever.search(kb, [Variant("original", "q", (DENSE, BM25, "title"))], mode="title")
    assert [f.chunk_id for f in only] == ["d", "a"]
    with pytest.raises(InvalidRequest):
        HybridRetriever(weights={"sparse": 1.0})


RETRIEVAL_INFO_KEYS = ["language", "mode", "top_k", "limit", "rrf_k", "fusion", "fused_candidates", "filter",
                       "transforms", "warnings", "rerank"]


def test_retrieval_is_a_stage_whose_decisions_travel_in_a_typed_trace(tmp_path):
    from rag.retrieval_stage import RetrievalStage
    from rag.trace import RerankDecision, RetrievalTrace

    services = build_services(tmp_path, llm=ScriptedLLM(router(answer="Two years [1].")), bm25_weight=0.5)
    pipeline = services.pipeline
    assert isinstance(pipeline.retrieval, RetrievalStage)
    result = pipeline.retrieve("how long is the warranty", KB, rerank=False, limit=3)
    trace = result.trace
    assert isinstance(trace, RetrievalTrace) and trace.rerank == RerankDecision(False, "turned off for this request")
    assert trace.lists == ("dense", "bm25") and trace.weights == {"dense": 1.0, "bm25": 0.5}
    assert {"dense", "bm25"} <= set(result.timings)  # each list's seconds under its name
    # `info` is the trace serialised, in the shape it always had
    assert list(result.info) == RETRIEVAL_INFO_KEYS and result.info == trace.info()
    assert result.info["rerank"] == {"enabled": False, "reason": "turned off for this request"}
    assert (result.info["limit"], result.info["fused_candidates"]) == (3, trace.fused_candidates)
    assert pipeline.retrieve("warranty", KB, mode="bm25").trace.lists == ("bm25",)
    answer = pipeline.answer("how long is the warranty", KB, rerank=False, limit=3)
    assert list(answer.info)[: len(RETRIEVAL_INFO_KEYS)] == RETRIEVAL_INFO_KEYS
    assert {k: answer.info[k] for k in RETRIEVAL_INFO_KEYS if k != "transforms"} == {
        k: v for k, v in result.info.items() if k != "transforms"}
