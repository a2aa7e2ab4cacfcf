"""Re-embedding a knowledge base from the API (issue 37): a knowledge base built with another model
than the server's says so in its settings (both models) and in its listing, stays listable and
readable while its queries are refused (409 `embedding_mismatch`), and `POST /v1/kbs/{kb}/reindex`
re-embeds it as a `reindex` job (progress in chunks), after which it answers again and the notice is
gone; 409 while another writer holds it, 403 for a read-only key, 404 for an unknown one; the same
on the PostgreSQL catalog; and a resumed reindex job (its server stopped) runs it again, correctly."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from api.app import create_app
from api.jobs import Job, JobManager
from rag.testing import HashEmbedder
from tests.unit.api_helpers import ADMIN, make_services, wait_for_job
from tests.unit.kb_fixtures import KB

QUERY = {"question": "How long is the warranty?", "kb": KB, "generate": False, "limit": 3}


def restarted(tmp_path, **settings):
    """The handbook built with the 64-d hash embedder, then served by one of 32 dimensions (the
    same store and data folder: a restart with another RAG_EMBED_MODEL)."""
    built = make_services(tmp_path, **settings)
    services = built.with_(embedder=HashEmbedder(dim=32))
    built.close()
    return services


def _reembed(client) -> dict:
    r = client.post(f"/v1/kbs/{KB}/reindex", headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == r.json()["status_url"]
    return r.json()


def _check_reembed(client) -> None:
    settings = client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN)
    assert settings.status_code == 200, settings.text
    s = settings.json()
    assert s["reembed_needed"] is True
    assert (s["embed_model"], s["dim"], s["server_embed_model"], s["server_dim"]) == ("hash-bow-64", 64,
                                                                                      "hash-bow-32", 32)
    assert "hash-bow-64" in s["reembed_message"] and "hash-bow-32" in s["reembed_message"]
    assert "/reindex" in s["reembed_message"]
    listed = {k["name"]: k for k in client.get("/v1/kbs", headers=ADMIN).json()}
    assert listed[KB]["reembed_needed"] is True
    assert client.get(f"/v1/kbs/{KB}", headers=ADMIN).json()["reembed_needed"] is True
    refused = client.post("/v1/query", json=QUERY, headers=ADMIN)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "embedding_mismatch"
    # a PATCH of the settings answers with the notice too
    patched = client.patch(f"/v1/kbs/{KB}/settings", json={"chunk_size": 400}, headers=ADMIN)
    assert patched.status_code == 200 and patched.json()["reembed_needed"] is True, patched.text

    accepted = _reembed(client)
    assert accepted["reembed_needed"] is True
    assert (accepted["embed_model"], accepted["to_embed_model"], accepted["to_dim"]) == ("hash-bow-64",
                                                                                         "hash-bow-32", 32)
    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "reindex", job
    assert job["files"] == [] and job["errors"] == []
    chunks = job["summary"]["chunks"]
    assert chunks > 0 and job["progress"]["chunks_embedded"] == job["progress"]["chunks_known"] == chunks
    assert (job["summary"]["from_embed_model"], job["summary"]["embed_model"]) == ("hash-bow-64", "hash-bow-32")

    r = client.post("/v1/query", json=QUERY, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == "" and len(r.json()["sources"]) == 3
    after = client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN).json()
    assert after["reembed_needed"] is False and after["reembed_message"] == ""
    assert (after["embed_model"], after["dim"], after["chunk_size"]) == ("hash-bow-32", 32, 400)
    assert client.get(f"/v1/kbs/{KB}", headers=ADMIN).json()["reembed_needed"] is False
    assert client.get(f"/v1/kbs/{KB}/check", headers=ADMIN).json()["ok"] is True
    jobs = client.get("/v1/jobs", headers=ADMIN).json()
    assert any(j["id"] == job["id"] and j["kind"] == "reindex" for j in jobs)


def test_a_knowledge_base_of_another_model_says_so_and_is_re_embedded_by_a_job(tmp_path):
    services = restarted(tmp_path)
    with TestClient(create_app(services)) as client:
        _check_reembed(client)
        # the same model: allowed, re-embeds all the same and says so
        same = _reembed(client)
        assert same["reembed_needed"] is False and "same" in same["message"]
        assert wait_for_job(client, same["job_id"])["status"] == "succeeded"
        assert client.post("/v1/query", json=QUERY, headers=ADMIN).status_code == 200
    services.close()


def test_reindex_is_refused_while_another_writer_holds_it_and_to_readers(tmp_path):
    services = restarted(tmp_path)
    with TestClient(create_app(services)) as client:
        key = client.post("/v1/keys", json={"name": "r", "read": [KB]}, headers=ADMIN).json()
        reader = {"X-API-Key": key["key"]}
        r = client.post(f"/v1/kbs/{KB}/reindex", headers=reader)
        assert r.status_code == 403, r.text
        assert client.get(f"/v1/kbs/{KB}/settings", headers=reader).json()["reembed_needed"] is True
        missing = client.post("/v1/kbs/nope/reindex", headers=ADMIN)
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "kb"
        held, release = threading.Event(), threading.Event()

        def writer() -> None:  # another writer (a `rag ingest`, a job) holds the write lock
            with services.kbs.writing(KB):
                held.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        assert held.wait(5)
        try:
            busy = client.post(f"/v1/kbs/{KB}/reindex", headers=ADMIN)
            assert busy.status_code == 409 and busy.json()["error"]["field"] == "kb", busy.text
            # an upload queued behind it: a job of the knowledge base unfinished, named in the refusal
            up = client.post(f"/v1/kbs/{KB}/documents", files=[("files", ("a.md", b"# A\n\nSome text."))],
                             headers=ADMIN)
            assert up.status_code == 202, up.text
            queued = client.post(f"/v1/kbs/{KB}/reindex", headers=ADMIN)
            assert queued.status_code == 409 and up.json()["job_id"] in queued.json()["error"]["message"]
        finally:
            release.set()
            thread.join()
        wait_for_job(client, up.json()["job_id"])  # refused: the model differs
        assert client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN).json()["reembed_needed"] is True
    services.close()


def test_a_resumed_reindex_job_runs_it_again_over_what_a_killed_one_left(tmp_path):
    """The server stopped during a reindex job that had written part of its new collection: the
    restarted server resumes the job, the half-written collection is removed, the knowledge base is
    re-embedded and consistent."""
    services = restarted(tmp_path)
    kbs = services.kbs
    services.store.ensure_collection(f"{KB}__v2", 32)  # what the killed reindex had begun
    first = JobManager(services, services.database("jobs"))
    job = Job("job_00000000deadbeef", KB, "admin", "running", time.time(), [], kind="reindex",
              started_at=time.time())
    first._save(job)
    first.close()  # its holder is gone: the next manager resumes the job at start
    with TestClient(create_app(services)) as client:
        done = wait_for_job(client, job.id)
        assert done["status"] == "succeeded" and "re-embedded it again" in done["recovery"], done
        assert client.post("/v1/query", json=QUERY, headers=ADMIN).status_code == 200
        check = client.get(f"/v1/kbs/{KB}/check", headers=ADMIN).json()
        assert check["ok"] is True and check["orphan_collections"] == [], check
    assert kbs.catalog.require_kb(KB).embed_model == "hash-bow-32"
    services.close()


def test_reembed_on_the_postgresql_catalog(tmp_path, pg_url):
    services = restarted(tmp_path, catalog_url=pg_url)
    with TestClient(create_app(services)) as client:
        _check_reembed(client)
    services.close()
