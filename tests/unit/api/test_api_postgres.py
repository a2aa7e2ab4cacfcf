"""The API with its whole catalog in PostgreSQL (`RAG_CATALOG_URL`, a real server): knowledge bases,
uploads through leased jobs, queries with citations, API keys, conversations, and `/readyz`; nothing
is written to the SQLite files of the data folder."""

from __future__ import annotations

from fastapi.testclient import TestClient

from rag.adapters.llm_fake import ScriptedLLM
from tests.unit.api.test_api_kbs import HOURS_TXT, WARRANTY_MD, _upload
from tests.unit.api_helpers import ADMIN, make_app


def test_the_api_runs_on_the_postgresql_catalog(tmp_path, pg_url):
    llm = ScriptedLLM(default="The Zephyr kettle warranty lasts three years [1].")
    app, services = make_app(tmp_path, llm=llm, catalog_url=pg_url)
    with TestClient(app) as client:
        assert client.post("/v1/kbs", json={"name": "manuals"}, headers=ADMIN).status_code == 201
        job = _upload(client, "manuals", [("kettle.md", WARRANTY_MD), ("hours.txt", HOURS_TXT)])
        assert job["status"] == "succeeded", job
        r = client.post("/v1/query", json={"kb": "manuals", "question": "How long is the kettle warranty?"},
                        headers=ADMIN)
        assert r.status_code == 200 and r.json()["citations"][0]["document"] == "kettle.md", r.text
        docs = client.get("/v1/kbs/manuals/documents", headers=ADMIN).json()
        assert sorted(d["source"] for d in docs) == ["hours.txt", "kettle.md"]
        key = client.post("/v1/keys", json={"name": "reader", "read": ["manuals"]}, headers=ADMIN).json()
        reader = {"Authorization": f"Bearer {key['key']}"}
        assert client.get("/v1/kbs/manuals", headers=reader).status_code == 200
        assert client.get("/v1/kbs/handbook", headers=reader).status_code == 403
        chat = client.post("/v1/chat", json={"kb": "manuals", "message": "How long is the kettle warranty?"},
                           headers=reader)
        assert chat.status_code == 200, chat.text
        conv = client.get(f"/v1/conversations/{chat.json()['conversation_id']}", headers=reader).json()
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
        assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "succeeded"
        assert client.get("/readyz", headers=ADMIN).json()["checks"]["store"]["knowledge_bases"] == 2
    services.close()
    assert sorted(p.name for p in services.data_dir.glob("*.sqlite")) == []
