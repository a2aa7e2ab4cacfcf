"""`POST /v1/query`: JSON answers with citations, SSE streaming and its error event, retrieval only,
the LLM being down (503, optionally with retrieval results), filters and validation errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.deps import get_pipeline
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import LLMError
from tests.unit.api_helpers import ADMIN, WARRANTY_ANSWER, answering_llm, make_app, parse_sse
from tests.unit.kb_fixtures import KB, router

QUESTION = "How long is the Acme X200 warranty?"


@pytest.fixture
def client(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as c:
        yield c


def test_query_answers_with_citations_sources_and_timings(client):
    r = client.post("/v1/query", json={"question": QUESTION, "kb": KB}, headers=ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["answer"] == WARRANTY_ANSWER and data["kb"] == KB and not data["refused"]
    assert data["citations"][0]["chunk_id"] == "warranty" and data["citations"][0]["supported"] is True
    assert data["citations"][0]["document"] == "acme-x200-manual.pdf" and data["citations"][0]["page"] == 12
    first = data["sources"][0]
    assert first["number"] == 1 and first["chunk_id"] == "warranty" and first["cited"] is True
    assert {"embed", "dense", "bm25", "fusion", "generate", "total"} <= set(data["timings"])
    assert data["hits"] is None and data["model"] == "scripted-llm"


def test_query_uses_the_default_kb_and_can_include_hits(client):
    r = client.post("/v1/query", json={"question": QUESTION, "include_hits": True, "limit": 2}, headers=ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["kb"] == KB and len(data["hits"]) == 2
    assert {p["list"] for p in data["hits"][0]["provenance"]} <= {"dense", "bm25"}


@pytest.mark.parametrize("filters", [{"source": "security-policy.html"}, ["source=security-policy.html"],
                                     {"team": "it"}, {"source": ["security-policy.html", "nothing.pdf"]}])
def test_query_filters_restrict_the_sources(client, filters):
    body = {"question": "password rules", "filters": filters, "generate": False}
    r = client.post("/v1/query", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["sources"] and {s["document"] for s in r.json()["sources"]} == {"security-policy.html"}


def test_retrieval_only_does_not_call_the_llm(tmp_path):
    llm = ScriptedLLM([])
    app, _ = make_app(tmp_path, llm=llm)
    with TestClient(app) as client:
        r = client.post("/v1/query", json={"question": QUESTION, "generate": False, "limit": 3}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["answer"] == "" and llm.calls == []
    assert [s["number"] for s in r.json()["sources"]] == [1, 2, 3]


def test_stream_sends_tokens_then_sources_citations_done(client):
    r = client.post("/v1/query", json={"question": QUESTION, "stream": True}, headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    kinds = [e for e, _ in events]
    assert kinds[0] == "retrieval" and kinds[-3:] == ["sources", "citations", "done"]
    assert set(kinds[1:-3]) == {"token"} and len(kinds) > 5
    tokens = "".join(d["text"] for e, d in events if e == "token")
    done = events[-1][1]
    assert tokens == done["answer"]["answer"] == WARRANTY_ANSWER and done["kb"] == KB
    assert events[-2][1]["citations"][0]["chunk_id"] == "warranty"
    assert all(d["type"] == e for e, d in events)


def test_stream_ends_with_an_error_event_when_generation_fails(tmp_path):
    llm = ScriptedLLM(router(answer=LLMError("LLM endpoint http://x unreachable: refused")))
    app, _ = make_app(tmp_path, llm=llm)
    with TestClient(app) as client:
        r = client.post("/v1/query", json={"question": QUESTION, "stream": True}, headers=ADMIN)
        metrics = client.get("/metrics", headers=ADMIN).text
    events = parse_sse(r.text)
    assert r.status_code == 200 and events[-1][0] == "error"
    assert events[-1][1]["code"] == "llm_unavailable" and "unreachable" in events[-1][1]["message"]
    assert "done" not in [e for e, _ in events]
    assert 'rag_errors_total{code="llm_unavailable"} 1' in metrics


def test_llm_down_is_503_with_retrieval_results_when_asked(tmp_path):
    llm = ScriptedLLM(router(answer=LLMError("LLM endpoint http://x unreachable: refused")))
    app, _ = make_app(tmp_path, llm=llm)
    with TestClient(app) as client:
        plain = client.post("/v1/query", json={"question": QUESTION}, headers=ADMIN)
        rich = client.post("/v1/query", json={"question": QUESTION, "retrieval_on_error": True}, headers=ADMIN)
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "llm_unavailable"
    assert "retrieval" not in plain.json()
    assert rich.status_code == 503 and rich.json()["retrieval"]["sources"][0]["chunk_id"] == "warranty"


def test_unknown_kb_is_404_also_when_streaming(client):
    for stream in (False, True):
        r = client.post("/v1/query", json={"question": QUESTION, "kb": "nope", "stream": stream}, headers=ADMIN)
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert r.json()["error"] == {"code": "not_found", "message": "unknown knowledge base 'nope'", "field": "kb"}


@pytest.mark.parametrize("body,field", [
    ({"question": ""}, "question"),
    ({"question": "   "}, "question"),
    ({}, "question"),
    ({"question": "x", "top_k": 0}, "top_k"),
    ({"question": "x", "mode": "fuzzy"}, "mode"),
    ({"question": "x", "kb": "../etc"}, "kb"),
    ({"question": "x", "filters": ["no-equals-sign"]}, "filter"),
    ({"question": "x", "transforms": ["telepathy"]}, "transforms"),
    ({"question": "x", "history": [{"role": "robot", "content": "hi"}]}, "history.0.role"),
])
def test_invalid_requests_are_422_naming_the_field(client, body, field):
    r = client.post("/v1/query", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["message"] and error["code"] in ("validation_error", "invalid_request")


def test_malformed_json_is_422(client):
    r = client.post("/v1/query", content=b"{not json", headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_stateless_history_condenses_the_follow_up(tmp_path):
    llm = answering_llm(condense="How long does the Acme X200 battery last?",
                        answer="About ten hours of continuous use [1].")
    app, _ = make_app(tmp_path, llm=llm)
    history = [{"role": "user", "content": "Tell me about the Acme X200."},
               {"role": "assistant", "content": "It is a device."}]
    with TestClient(app) as client:
        r = client.post("/v1/query", json={"question": "and its battery?", "history": history}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["standalone_question"] == "How long does the Acme X200 battery last?"
    assert r.json()["sources"][0]["chunk_id"] == "battery"


class CrashingPipeline:
    """Stands in for the pipeline through the dependency override: crashes mid-stream."""

    def stream(self, question, kb, **kwargs):
        def events():
            yield {"type": "token", "text": "Partial"}
            raise RuntimeError("boom")

        return events()

    def answer(self, question, kb, **kwargs):
        raise LLMError("LLM endpoint down")


def test_pipeline_dependency_can_be_overridden_and_crashes_end_in_an_error_event(tmp_path):
    app, _ = make_app(tmp_path)
    app.dependency_overrides[get_pipeline] = CrashingPipeline
    with TestClient(app) as client:
        r = client.post("/v1/query", json={"question": QUESTION, "stream": True}, headers=ADMIN)
        down = client.post("/v1/query", json={"question": QUESTION}, headers=ADMIN)
    events = parse_sse(r.text)
    assert events[0] == ("token", {"type": "token", "text": "Partial"})
    assert events[-1][0] == "error" and events[-1][1]["code"] == "internal_error"
    assert down.status_code == 503 and down.json()["error"]["message"] == "LLM endpoint down"
