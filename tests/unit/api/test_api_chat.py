"""`POST /v1/chat` with server-side history: follow-ups condensed with the stored turns, streaming
with the conversation id, history retrieval and deletion, isolation between API keys, and no
half turns stored when generation fails."""

from __future__ import annotations

from fastapi.testclient import TestClient

from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import LLMError
from tests.unit.api_helpers import ADMIN, answering_llm, make_app, parse_sse
from tests.unit.kb_fixtures import KB, kind_of, router


def _key(client: TestClient, name: str, read=("*",)) -> dict[str, str]:
    r = client.post("/v1/keys", json={"name": name, "read": list(read)}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"X-API-Key": r.json()["key"]}


def test_follow_up_is_condensed_with_the_stored_history(tmp_path):
    def answer(messages):
        return ("The warranty lasts two years [1]." if "warranty" in messages[-1]["content"].split("Question:")[-1]
                else "The battery lasts about ten hours [1].")

    llm = ScriptedLLM(router(answer=answer, condense="How long does the Acme X200 battery last?"))
    app, _ = make_app(tmp_path, llm=llm)
    with TestClient(app) as client:
        first = client.post("/v1/chat", json={"message": "How long is the Acme X200 warranty?"}, headers=ADMIN)
        assert first.status_code == 200, first.text
        conv = first.json()["conversation_id"]
        assert conv.startswith("conv_") and first.headers["X-Conversation-Id"] == conv
        second = client.post("/v1/chat", json={"message": "And the battery?", "conversation_id": conv}, headers=ADMIN)
        history = client.get(f"/v1/conversations/{conv}", headers=ADMIN)
    assert second.status_code == 200, second.text
    assert second.json()["standalone_question"] == "How long does the Acme X200 battery last?"
    assert second.json()["sources"][0]["chunk_id"] == "battery"
    condense_calls = [c for c in llm.calls if kind_of(c["messages"]) == "condense"]
    assert len(condense_calls) == 1 and "warranty" in condense_calls[0]["messages"][-1]["content"]
    messages = history.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == "The warranty lasts two years [1]."
    assert messages[1]["citations"][0]["chunk_id"] == "warranty" and messages[1]["sources"][0]["number"] == 1
    assert history.json()["kb"] == KB


def test_streamed_chat_announces_the_conversation_and_stores_the_turn(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        r = client.post("/v1/chat", json={"message": "warranty of the Acme X200?", "stream": True,
                                          "conversation_id": "my-chat-1"}, headers=ADMIN)
        events = parse_sse(r.text)
        stored = client.get("/v1/conversations/my-chat-1", headers=ADMIN).json()
        listed = client.get("/v1/conversations", headers=ADMIN).json()
    assert events[0] == ("conversation", {"type": "conversation", "conversation_id": "my-chat-1", "kb": KB})
    assert events[-1][0] == "done" and events[-1][1]["conversation_id"] == "my-chat-1"
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"] == events[-1][1]["answer"]["answer"]
    assert [c["id"] for c in listed] == ["my-chat-1"] and listed[0]["title"] == "warranty of the Acme X200?"


def test_failed_generation_stores_no_turn(tmp_path):
    llm = ScriptedLLM(router(answer=LLMError("LLM endpoint down")))
    app, _ = make_app(tmp_path, llm=llm)
    with TestClient(app) as client:
        plain = client.post("/v1/chat", json={"message": "warranty?", "conversation_id": "c1"}, headers=ADMIN)
        streamed = client.post("/v1/chat", json={"message": "warranty?", "conversation_id": "c1", "stream": True},
                               headers=ADMIN)
        missing = client.get("/v1/conversations/c1", headers=ADMIN)
    assert plain.status_code == 503
    assert parse_sse(streamed.text)[-1][0] == "error"
    assert missing.status_code == 404


def test_conversations_are_private_to_their_key(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        alice, bob = _key(client, "alice"), _key(client, "bob")
        conv = client.post("/v1/chat", json={"message": "warranty?"}, headers=alice).json()["conversation_id"]
        assert client.get(f"/v1/conversations/{conv}", headers=alice).status_code == 200
        assert client.get(f"/v1/conversations/{conv}", headers=bob).status_code == 404
        assert client.post("/v1/chat", json={"message": "more?", "conversation_id": conv},
                           headers=bob).status_code == 404
        assert client.delete(f"/v1/conversations/{conv}", headers=bob).status_code == 404
        assert client.get("/v1/conversations", headers=bob).json() == []
        assert client.get(f"/v1/conversations/{conv}", headers=ADMIN).status_code == 200  # the admin sees all
        assert client.delete(f"/v1/conversations/{conv}", headers=alice).status_code == 204
        assert client.get(f"/v1/conversations/{conv}", headers=alice).status_code == 404


def test_conversation_id_is_validated(tmp_path):
    app, _ = make_app(tmp_path, llm=answering_llm())
    with TestClient(app) as client:
        r = client.post("/v1/chat", json={"message": "hi", "conversation_id": "../../x"}, headers=ADMIN)
        g = client.get("/v1/conversations/bad id!", headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "conversation_id"
    assert g.status_code == 422 and g.json()["error"]["field"] == "conversation_id"
