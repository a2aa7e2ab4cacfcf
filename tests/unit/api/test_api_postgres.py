"""The API with its whole catalog in PostgreSQL (`RAG_CATALOG_URL`, a real server): knowledge bases,
uploads through leased jobs, queries with citations, API keys, conversations, and `/readyz`; nothing
is written to the SQLite files of the data folder. Connections the server drops cost one request a 503
with Retry-After, not the process."""

from __future__ import annotations

import psycopg
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


def test_dropped_database_connections_cost_one_503_and_are_replaced(tmp_path, pg_url):
    app, services = make_app(tmp_path, catalog_url=pg_url)
    with TestClient(app) as client:
        assert client.post("/v1/kbs", json={"name": "manuals"}, headers=ADMIN).status_code == 201
        with psycopg.connect(pg_url, autocommit=True) as admin:  # as a restarted server would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()")
        answers = [client.get("/v1/kbs/manuals/documents", headers=ADMIN) for _ in range(3)]
        failed = [r for r in answers if r.status_code != 200]
        assert len(failed) == 1 and answers[-1].status_code == 200, [r.text for r in answers]
        for r in failed:
            assert r.status_code == 503 and r.headers["Retry-After"] == "2", r.text
            assert r.json()["error"]["code"] == "database_unavailable" and pg_url not in r.text
    services.close()
