"""One contract for every LLM: the ScriptedLLM test double, OpenAICompatLLM (the real `openai` client)
against the fake OpenAI-compatible endpoint of tests/unit/rag/test_llm.py, and the embedded llama.cpp
model (the bundled Qwen2.5 0.5B GGUF; marked slow)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.llm_timing import TokenUsage
from rag.protocols import LLM
from tests.unit.rag.test_llm import FakeEndpoint, _handler

REPLY = "The sky is blue. END more text"

MESSAGES = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What colour is the sky on a clear day? Reply: The sky is blue."}]


def _embedded() -> LLM:
    from rag.adapters.llm_embedded import EmbeddedLlamaLLM

    return EmbeddedLlamaLLM(n_ctx=1024, n_threads=2)


@pytest.fixture(scope="module")
def endpoint_url() -> Iterator[str]:
    state = FakeEndpoint()
    state.reply = REPLY
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _openai(url: str) -> LLM:
    from rag.adapters.llm_openai import OpenAICompatLLM

    return OpenAICompatLLM(url, model="default", max_retries=0)


FACTORIES: dict[str, Callable[[str], LLM]] = {
    "scripted": lambda url: ScriptedLLM(default=REPLY),
    "openai-compatible": _openai,
    "embedded-llama.cpp": lambda url: _embedded(),
}
SLOW = {"embedded-llama.cpp"}


@pytest.fixture(scope="module", params=[pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k
                                        for k in FACTORIES])
def llm(request: pytest.FixtureRequest) -> LLM:
    url = request.getfixturevalue("endpoint_url") if request.param == "openai-compatible" else ""
    return FACTORIES[request.param](url)


def test_implements_protocol(llm):
    assert isinstance(llm, LLM)
    assert isinstance(llm.name, str) and llm.name
    assert isinstance(llm.info(), dict)


def test_chat_returns_text(llm):
    reply = llm.chat(MESSAGES, max_tokens=24, temperature=0.0)
    assert isinstance(reply, str) and reply.strip()
    assert "blue" in reply.lower()


def test_stream_gives_the_same_text_as_chat(llm):
    reply = llm.chat(MESSAGES, max_tokens=24, temperature=0.0)
    pieces = list(llm.stream(MESSAGES, max_tokens=24, temperature=0.0))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == reply


def test_stream_takes_a_usage_and_reports_plausible_counts(llm):
    usage = TokenUsage()
    text = "".join(llm.stream(MESSAGES, max_tokens=24, temperature=0.0, usage=usage))
    assert text == llm.chat(MESSAGES, max_tokens=24, temperature=0.0)
    # a runtime that counts reports at least one token and no more than max_tokens; one that does not leaves None
    assert usage.completion_tokens is None or 1 <= usage.completion_tokens <= 24
    assert usage.prompt_tokens is None or usage.prompt_tokens > 0


def test_stop_strings_cut_the_reply(llm):
    reply = llm.chat(MESSAGES, max_tokens=24, temperature=0.0, stop=["blue"])
    assert "blue" not in reply.lower()


def test_warm_up_is_idempotent(llm):
    llm.warm_up()
    llm.warm_up()
    assert llm.chat(MESSAGES, max_tokens=24, temperature=0.0).strip()
