"""Knowledge-base usage from the API: generated answers (query, chat, OpenAI-compatible, streamed or
not) are counted per day with their refusals and cited documents; retrieval-only calls are not; the
never-cited documents come in pages; a dropped knowledge base's counts go with it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from rag.adapters.llm_fake import ScriptedLLM
from rag.usage import day_of
from tests.unit.api_helpers import ADMIN, WARRANTY_ANSWER, make_app
from tests.unit.kb_fixtures import KB, router

QUESTION = "How long is the Acme X200 warranty?"


def test_answers_refusals_and_citations_are_counted_per_day(tmp_path):
    reply = {"answer": WARRANTY_ANSWER}
    app, _ = make_app(tmp_path, llm=ScriptedLLM(router(answer=lambda messages: reply["answer"])))
    with TestClient(app) as client:
        for body in ({"question": QUESTION}, {"question": QUESTION, "stream": True}):
            assert client.post("/v1/query", json=body, headers=ADMIN).status_code == 200
        assert client.post("/v1/chat", json={"message": QUESTION}, headers=ADMIN).status_code == 200
        assert client.post("/v1/chat/completions", json={"model": KB, "messages": [{"role": "user", "content": QUESTION}]},
                           headers=ADMIN).status_code == 200
        assert client.post("/v1/query", json={"question": QUESTION, "generate": False}, headers=ADMIN).status_code == 200
        reply["answer"] = "The Acme X200 warranty lasts 9 years [1]."  # an invented figure: refused
        refused = client.post("/v1/query", json={"question": QUESTION}, headers=ADMIN).json()
        assert refused["refused"] is True
        r = client.get(f"/v1/kbs/{KB}/usage", params={"days": 7}, headers=ADMIN)
        assert r.status_code == 200, r.text
        usage = r.json()
        assert len(usage["days"]) == 7 and usage["days"][-1]["day"] == day_of(__import__("time").time())
        today = usage["days"][-1]
        assert (today["questions"], today["refusals"], today["cited_documents"]) == (5, 1, 1)
        assert (usage["questions"], usage["refusals"]) == (5, 1)
        assert [(d["source"], d["answers"]) for d in usage["top_cited"]] == [("acme-x200-manual.pdf", 4)]
        assert usage["never_cited_total"] == 2
        assert [d["source"] for d in usage["never_cited"]] == ["security-policy.html", "员工休假制度.md"]
        page = client.get(f"/v1/kbs/{KB}/usage", params={"limit": 1, "offset": 1}, headers=ADMIN).json()
        assert [d["source"] for d in page["never_cited"]] == ["员工休假制度.md"] and page["never_cited_total"] == 2
        for params in ({"days": 0}, {"days": 400}, {"limit": 0}):
            bad = client.get(f"/v1/kbs/{KB}/usage", params=params, headers=ADMIN)
            assert bad.status_code == 422 and bad.json()["error"]["field"] == next(iter(params))
        assert client.get("/v1/kbs/nope/usage", headers=ADMIN).status_code == 404
        assert client.delete(f"/v1/kbs/{KB}", headers=ADMIN).status_code == 204
        assert app.state.api.usage.report(KB, 7).days[-1].questions == 0
