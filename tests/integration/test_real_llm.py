"""The embedded LLMs for real: the bundled GGUFs joined from their packages (into ~/.rag/models,
verified once and then reused) and run by llama.cpp on CPU: every test on the small model
(Qwen2.5-Coder-0.5B-Instruct), the answer tests on the large one (1.5B) when it is installed."""

from __future__ import annotations

import re

import pytest

from rag.adapters.llm import EmbeddedLlamaLLM, make_llm
from rag.models import LARGE_LLM, SMALL_LLM, resolve_bundled_gguf

pytestmark = pytest.mark.slow

SYSTEM = ("You answer questions using only the given context. Answer briefly, in the language of the "
          "question. If the context does not contain the answer, say you don't know.")
CONTEXT_EN = ("[1] The Acme X200 is covered by a warranty of two years from the date of purchase.\n"
              "[2] The Acme X200 uses an 18 V lithium-ion battery.")
CONTEXT_ZH = "[1] Acme X200 的保修期为自购买之日起两年。\n[2] Acme X200 使用 18V 锂离子电池。"


def _messages(question: str, context: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Question: {question}\n\nContext:\n{context}\n\nQuestion: {question}"}]


def _loaded(bundled) -> EmbeddedLlamaLLM:
    path = resolve_bundled_gguf(model=bundled)
    assert path.stat().st_size == bundled.size
    model = make_llm(None, "default", None, 120.0, None, 2048, 0, embedded=bundled.key)
    assert isinstance(model, EmbeddedLlamaLLM) and model.info()["embedded"] == bundled.key
    model.warm_up()
    return model


@pytest.fixture(scope="module")
def llm() -> EmbeddedLlamaLLM:
    return _loaded(SMALL_LLM)


@pytest.fixture(scope="module", params=[SMALL_LLM, LARGE_LLM], ids=["small", "large"])
def each_llm(request) -> EmbeddedLlamaLLM:
    if request.param.part(1) is None:
        pytest.skip(f"the {request.param.key} model is an optional install: pip install -e '.[large-llm]'")
    return _loaded(request.param)


def test_answers_in_english_from_the_context(each_llm):
    llm = each_llm
    answer = llm.chat(_messages("How long is the warranty of the Acme X200?", CONTEXT_EN), max_tokens=64)
    assert re.search(r"\b(two|2)[ -]years?\b", answer, re.IGNORECASE), answer
    assert llm.info()["loaded"] is True


def test_answers_in_chinese_from_the_context(each_llm):
    llm = each_llm
    answer = llm.chat(_messages("Acme X200 的保修期是多久？", CONTEXT_ZH), max_tokens=64)
    assert re.search(r"(两|2|二)\s*年", answer), answer


def test_greedy_is_deterministic_and_stream_matches_chat(llm):
    messages = _messages("What battery does the Acme X200 use?", CONTEXT_EN)
    first = llm.chat(messages, max_tokens=48)
    assert first and llm.chat(messages, max_tokens=48) == first
    deltas = list(llm.stream(messages, max_tokens=48))
    assert len(deltas) > 1 and "".join(deltas) == first
    assert "18" in first


def test_generation_stops_at_the_end_of_the_turn(llm):
    answer = llm.chat(_messages("How long is the warranty of the Acme X200?", CONTEXT_EN), max_tokens=256)
    assert "<|im_end|>" not in answer and "<|im_start|>" not in answer
    assert llm.last_timings["predicted_n"] < 256  # finished on the end token, not on max_tokens


def test_early_close_of_a_stream_frees_the_model(llm):
    stream = llm.stream(_messages("Describe the Acme X200 in detail.", CONTEXT_EN), max_tokens=200)
    assert next(stream)
    stream.close()
    answer = llm.chat(_messages("How long is the warranty of the Acme X200?", CONTEXT_EN), max_tokens=32)
    assert answer
