"""The reranking stage with deterministic scorers: ordering, cut-off, top-n, candidate window,
refusal on a low best score, and skipping when no reranker model exists."""

from __future__ import annotations

import logging

import pytest

from rag import prompts
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import ModelError
from rag.rerank import RerankStage, passage_text
from rag.types import Chunk, Hit
from tests.unit.kb_fixtures import KB, OverlapReranker, TableReranker, build_services, router


def hits(*ids: str) -> list[Hit]:
    return [Hit(Chunk(i, "kb", "d", "s", f"passage {i}", 0, 9), score=1.0 / (61 + n)) for n, i in enumerate(ids)]


def test_sorts_by_score_cuts_below_minimum_and_keeps_top_n():
    scorer = TableReranker({"passage a": 0.1, "passage b": 0.9, "passage c": 0.04, "passage d": 0.5})
    outcome = RerankStage(scorer, candidates=10, min_score=0.05).apply("q", hits("a", "b", "c", "d"), top_n=2)
    assert [h.chunk.id for h in outcome.hits] == ["b", "d"]
    assert [h.rerank_score for h in outcome.hits] == [0.9, 0.5]
    assert outcome.info["dropped_below_min"] == 1 and outcome.info["best_score"] == 0.9
    assert len(scorer.calls) == 1 and len(scorer.calls[0][1]) == 4  # one batched call


def test_only_the_candidate_window_is_scored():
    scorer = TableReranker({}, default=0.5)
    outcome = RerankStage(scorer, candidates=3, min_score=0.0).apply("q", hits("a", "b", "c", "d", "e"), top_n=2)
    assert len(scorer.calls[0][1]) == 3
    assert [h.chunk.id for h in outcome.hits] == ["a", "b"]  # ties keep the fused order


def test_window_grows_to_top_n_and_scores_are_clipped():
    scorer = TableReranker({"passage a": 1.7, "passage b": -0.2, "passage c": float("nan")}, default=0.3)
    outcome = RerankStage(scorer, candidates=2, min_score=0.0).apply("q", hits("a", "b", "c", "d"), top_n=4)
    assert {h.chunk.id: h.rerank_score for h in outcome.hits} == {"a": 1.0, "d": 0.3, "b": 0.0, "c": 0.0}


def test_wrong_number_of_scores_is_a_model_error():
    class Broken(TableReranker):
        def score(self, query, passages):
            return [0.5]

    with pytest.raises(ModelError, match="1 scores for 2 passages"):
        RerankStage(Broken({})).apply("q", hits("a", "b"), top_n=2)


def test_passage_text_adds_title_and_section():
    chunk = Chunk("x", "kb", "d", "m.pdf", "Hold the button.", 0, 16, title="Manual", section_path=("Reset",))
    assert passage_text(chunk) == "Manual > Reset\nHold the button."


def test_pipeline_reranks_fused_hits(tmp_path):
    reranker = OverlapReranker()
    services = build_services(tmp_path, reranker=reranker, rerank_candidates=7, refuse_min_score=0.0)
    result = services.pipeline.retrieve("battery charge cable", KB, limit=3)
    assert result.rerank_enabled and result.info["rerank"]["model"] == "overlap-reranker"
    assert result.hits[0].chunk.id == "battery"
    scores = [h.rerank_score for h in result.hits]
    assert scores == sorted(scores, reverse=True) and all(s >= 0.05 for s in scores)
    assert len(reranker.calls) == 1


def test_low_best_score_refuses_without_calling_the_llm(tmp_path):
    llm = ScriptedLLM([])  # any call would fail the test
    services = build_services(tmp_path, llm=llm, reranker=TableReranker({}, default=0.1), refuse_min_score=0.2)
    pipeline = services.pipeline
    answer = pipeline.answer("How long is the warranty?", KB)
    assert answer.refused and answer.answer == prompts.REFUSAL["en"]
    assert answer.info["refusal_reason"] == "low_rerank_score"
    assert answer.sources == [] and answer.citations == [] and llm.calls == []
    zh = pipeline.answer("员工年假有几天？", KB)
    assert zh.refused and zh.answer == "文档中没有找到相关信息。"


def test_all_hits_under_min_score_refuse(tmp_path):
    services = build_services(tmp_path, llm=ScriptedLLM([]), reranker=TableReranker({}, default=0.01))
    answer = services.pipeline.answer("warranty", KB)
    assert answer.refused and answer.hits == [] and answer.info["refusal_reason"] == "no_hits"


def test_good_score_calls_the_llm(tmp_path):
    llm = ScriptedLLM(router(answer="It lasts two years [1]."))
    services = build_services(tmp_path, llm=llm, reranker=TableReranker({"warranty lasts": 0.9}, default=0.0))
    answer = services.pipeline.answer("How long is the warranty?", KB)
    assert not answer.refused and answer.sources[0].chunk_id == "warranty" and answer.sources[0].rerank_score == 0.9
    assert len(answer.sources) == 1  # the others fell under rerank_min_score


def test_no_reranker_skips_with_one_log_line_per_pipeline(tmp_path, caplog):
    services = build_services(tmp_path, reranker=None)
    with caplog.at_level(logging.INFO, logger="rag.pipeline"):
        first = services.pipeline.retrieve("warranty", KB)
        services.pipeline.retrieve("battery", KB)
    assert not first.rerank_enabled and first.info["rerank"]["enabled"] is False
    assert "no reranker model" in first.info["rerank"]["reason"]
    assert sum("reranking skipped" in r.getMessage() for r in caplog.records) == 1
    assert all(h.rerank_score is None for h in first.hits)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rag.pipeline"):  # no module state: another one says it again
        services.with_().pipeline.retrieve("warranty", KB)
    assert sum("reranking skipped" in r.getMessage() for r in caplog.records) == 1


def test_rerank_off_refuses_only_without_hits(tmp_path):
    llm = ScriptedLLM(router(answer="The warranty lasts two years [1]."))
    services = build_services(tmp_path, llm=llm, reranker=TableReranker({}, default=0.0))
    answer = services.pipeline.answer("warranty", KB, rerank=False)
    assert not answer.refused and not answer.rerank_enabled and answer.info["rerank"]["enabled"] is False


def test_reranker_failure_degrades_to_fused_order(tmp_path):
    class Failing(TableReranker):
        def score(self, query, passages):
            raise ModelError("cross-encoder weights missing")

    services = build_services(tmp_path, reranker=Failing({}))
    result = services.pipeline.retrieve("warranty", KB)
    assert not result.rerank_enabled and result.hits[0].chunk.id == "warranty"
    assert "cross-encoder weights missing" in result.info["warnings"][0]
