"""The OpenAI-compatible surface through TestClient: response and chunk shapes, citations in the
`rag` extra field, model -> knowledge base, history from earlier messages, errors. The real
`openai` client is exercised in tests/integration/test_api_openai_client.py."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import LLMError
from tests.unit.api_helpers import ADMIN, WARRANTY_ANSWER, answering_llm, make_app
from tests.unit.kb_fixtures import KB, router

MESSAGES = [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "How long is the Acme X200 warranty?"}]


@pytest.fixture
def client(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as c:
        yield c


def _chunks(text: str) -> list:
    lines = [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_non_streaming_completion_has_the_answer_and_citations(client):
    r = client.post("/v1/chat/completions", json={"model": KB, "messages": MESSAGES}, headers=ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "chat.completion" and data["model"] == KB and data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": WARRANTY_ANSWER} and choice["finish_reason"] == "stop"
    assert data["rag"]["citations"][0]["chunk_id"] == "warranty" and data["rag"]["kb"] == KB
    assert data["rag"]["sources"][0]["document"] == "acme-x200-manual.pdf"
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] > 0


def test_streaming_completion_puts_citations_on_the_final_chunk(client):
    body = {"model": "default", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    r = client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = _chunks(r.text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == WARRANTY_ANSWER
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert len(final) == 1 and final[0]["rag"]["citations"][0]["chunk_id"] == "warranty"
    assert final[0]["model"] == KB and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_a_streamed_answer_withdrawn_after_generation_is_flagged_on_the_final_chunk(client, tmp_path):
    # an invented figure fails the answer check: the refusal replaces the streamed text
    invented = "The Acme X200 warranty lasts 9 years [1]."
    app, _ = make_app(tmp_path / "withdrawn", llm=ScriptedLLM(router(answer=invented)))
    with TestClient(app) as other:
        r = other.post("/v1/chat/completions", json={"model": KB, "messages": MESSAGES, "stream": True},
                       headers=ADMIN)
    chunks = _chunks(r.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    (final,) = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert text == invented and final["rag"]["refused"] is True
    assert final["rag"]["replaced"] is True and final["rag"]["answer"] != invented and final["rag"]["answer"]
    ok = client.post("/v1/chat/completions", json={"model": KB, "messages": MESSAGES, "stream": True}, headers=ADMIN)
    (final,) = [c for c in _chunks(ok.text) if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert "replaced" not in final["rag"]  # what was streamed is the answer


def test_earlier_messages_are_history_and_rag_options_apply(tmp_path):
    llm = answering_llm(condense="What are the password rules?", answer="At least twelve characters [1].")
    app, _ = make_app(tmp_path, llm=llm)
    messages = [{"role": "user", "content": "Tell me about security."},
                {"role": "assistant", "content": "There is a security policy."},
                {"role": "user", "content": [{"type": "text", "text": "What about passwords?"}]}]
    body = {"model": KB, "messages": messages, "rag": {"filters": {"team": "it"}, "append_sources": True}}
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["rag"]["standalone_question"] == "What are the password rules?"
    assert {s["document"] for s in data["rag"]["sources"]} == {"security-policy.html"}
    content = data["choices"][0]["message"]["content"]
    assert content.startswith("At least twelve characters [1].") and "\n\nSources:\n[1] Security Policy" in content


def test_models_lists_the_knowledge_bases(client):
    r = client.get("/v1/models", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["object"] == "list" and [m["id"] for m in r.json()["data"]] == [KB]
    assert r.json()["data"][0]["object"] == "model"


@pytest.mark.parametrize("body,status,field", [
    ({"model": "nope", "messages": MESSAGES}, 404, "kb"),
    ({"model": KB, "messages": []}, 422, "messages"),
    ({"model": KB, "messages": [{"role": "assistant", "content": "hi"}]}, 422, "messages"),
    ({"model": KB, "messages": [{"role": "user", "content": "  "}]}, 422, "messages"),
    ({"model": KB, "messages": MESSAGES, "rag": {"colour": "red"}}, 422, "rag"),
    ({"model": KB, "messages": MESSAGES, "rag": {"top_k": "ten"}}, 422, "rag.top_k"),
])
def test_bad_completion_requests(client, body, status, field):
    r = client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


def test_llm_down(tmp_path):
    app, _ = make_app(tmp_path, llm=ScriptedLLM(router(answer=LLMError("LLM endpoint down"))))
    with TestClient(app) as client:
        plain = client.post("/v1/chat/completions", json={"model": KB, "messages": MESSAGES}, headers=ADMIN)
        streamed = client.post("/v1/chat/completions", json={"model": KB, "messages": MESSAGES, "stream": True},
                               headers=ADMIN)
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "llm_unavailable"
    errors = [json.loads(line[5:]) for line in streamed.text.split("\n") if line.startswith("data: {\"error\"")]
    assert errors and errors[0]["error"]["message"] == "LLM endpoint down"
    assert "[DONE]" not in streamed.text
