"""Per-knowledge-base ingest settings and re-parse, from the API: the settings as they apply (the
knowledge base's own, else the server's), validation naming the field, their use by later uploads
and by `rag ingest` under its flags, and re-parsing stored uploads with other chunking as a job
(forced, tags kept), with per-id errors for unknown and folder-ingested documents."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ingest.service import build_ingestor
from tests.unit.api_helpers import ADMIN, make_app, wait_for_job

KB = "settings-kb"
TEXT = "\n\n".join(f"Paragraph {i}. " + "The handbook explains holidays and travel rules in detail. " * 3
                   for i in range(12)).encode()


@pytest.fixture
def app_services(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app_services):
    with TestClient(app_services[0]) as c:
        assert c.post("/v1/kbs", json={"name": KB}, headers=ADMIN).status_code == 201
        yield c


def _upload(client, name: str = "guide.md", data: bytes = TEXT, tags: str | None = None) -> dict:
    r = client.post(f"/v1/kbs/{KB}/documents", files=[("files", (name, data))],
                    data={"tags": tags} if tags else None, headers=ADMIN)
    assert r.status_code == 202, r.text
    return wait_for_job(client, r.json()["job_id"])


def _docs(client) -> dict[str, dict]:
    return {d["source"]: d for d in client.get(f"/v1/kbs/{KB}/documents", headers=ADMIN).json()}


def test_settings_default_to_the_servers_and_patch_applies_to_later_uploads(client):
    got = client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN).json()
    assert (got["chunker"], got["chunk_size"], got["chunk_overlap"], got["ocr"]) == ("recursive", 800, 120, True)
    assert got["own"] == [] and got["embed_model"] and got["reparse_needed"] is False and got["reembed_needed"] is False
    assert _upload(client)["status"] == "succeeded"
    before = _docs(client)["guide.md"]["chunks"]
    r = client.patch(f"/v1/kbs/{KB}/settings", json={"chunk_size": 200, "chunk_overlap": 20, "tags": {"team": "hr"}},
                     headers=ADMIN)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["chunk_size"], out["chunk_overlap"], out["tags"]) == (200, 20, {"team": "hr"})
    assert sorted(out["own"]) == ["chunk_overlap", "chunk_size", "tags"]
    assert out["reparse_needed"] is True and out["stale_documents"] == 1 and "re-parse" in out["message"]
    # a new upload is chunked with the knowledge base's size and gets its tags (the upload's added)
    assert _upload(client, "other.md", tags="lang=en")["status"] == "succeeded"
    other = _docs(client)["other.md"]
    assert other["chunks"] > before and other["tags"] == {"team": "hr", "lang": "en"}
    # null: back to the server's setting
    out = client.patch(f"/v1/kbs/{KB}/settings", json={"chunk_size": None, "chunk_overlap": None},
                       headers=ADMIN).json()
    assert (out["chunk_size"], out["own"]) == (800, ["tags"])


@pytest.mark.parametrize("body, field", [
    ({"chunk_overlap": 800}, "chunk_overlap"),  # not smaller than the server's size 800
    ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
    ({"chunk_size": 10}, "chunk_size"), ({"chunker": "words"}, "chunker"), ({"ocr": "maybe"}, "ocr"),
    ({"tags": {"team": "a,b"}}, "tags"), ({"colour": "red"}, "colour")])
def test_bad_settings_name_the_field(client, body, field):
    r = client.patch(f"/v1/kbs/{KB}/settings", json=body, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    assert client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN).json()["own"] == []  # nothing saved


def test_reparse_with_another_chunk_size_changes_the_chunk_count_and_keeps_tags(client):
    assert _upload(client, tags="team=ops")["status"] == "succeeded"
    doc = _docs(client)["guide.md"]
    client.patch(f"/v1/kbs/{KB}/documents/{doc['doc_id']}", json={"add_tags": {"edited": "yes"}}, headers=ADMIN)
    r = client.post(f"/v1/kbs/{KB}/documents/reparse",
                    json={"doc_ids": [doc["doc_id"], "nope"], "settings": {"chunk_size": 150, "chunk_overlap": 10}},
                    headers=ADMIN)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["chunk_size"] == 150 and [d["doc_id"] for d in accepted["documents"]] == [doc["doc_id"]]
    assert [(e["doc_id"], e["error"]) for e in accepted["errors"]] == [("nope", "not_found")]
    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "reparse", job
    assert job["files"][0]["status"] == "updated"
    after = _docs(client)["guide.md"]
    assert after["chunks"] > doc["chunks"] and after["tags"] == {"team": "ops", "edited": "yes"}
    # the same settings again: forced, so re-parsed although nothing changed
    job = wait_for_job(client, client.post(f"/v1/kbs/{KB}/documents/reparse", json={
        "doc_ids": [doc["doc_id"]], "settings": {"chunk_size": 150, "chunk_overlap": 10}}, headers=ADMIN).json()["job_id"])
    assert job["files"][0]["status"] == "updated" and _docs(client)["guide.md"]["chunks"] == after["chunks"]
    # the knowledge base's settings were not changed by the re-parse
    assert client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN).json()["chunk_size"] == 800


def test_reparse_all_after_a_settings_change_clears_the_stale_count(client):
    _upload(client)
    _upload(client, "b.md")
    out = client.patch(f"/v1/kbs/{KB}/settings", json={"chunk_size": 300, "chunk_overlap": 30}, headers=ADMIN).json()
    assert out["stale_documents"] == 2
    accepted = client.post(f"/v1/kbs/{KB}/documents/reparse", json={"all": True}, headers=ADMIN).json()
    assert accepted["chunk_size"] == 300 and len(accepted["documents"]) == 2
    assert wait_for_job(client, accepted["job_id"])["status"] == "succeeded"
    out = client.get(f"/v1/kbs/{KB}/settings", headers=ADMIN).json()
    assert out["stale_documents"] == 0 and out["reparse_needed"] is False


def test_reparse_errors(client, app_services, tmp_path):
    services = app_services[1]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "local.md").write_bytes(TEXT)
    with services.kbs.writing(KB):
        build_ingestor(services, KB).ingest_folder(folder)
    local = _docs(client)["local.md"]
    assert local["uploaded"] is False
    r = client.post(f"/v1/kbs/{KB}/documents/reparse", json={"doc_ids": [local["doc_id"]]}, headers=ADMIN)
    assert r.status_code == 202 and r.json()["job_id"] is None
    error = r.json()["errors"][0]
    assert error["error"] == "not_uploaded" and "rag ingest" in error["message"]
    for body, field in [({}, "doc_ids"), ({"doc_ids": ["x"], "settings": {"chunk_overlap": 900}}, "settings.chunk_overlap"),
                        ({"doc_ids": ["x"], "settings": {"chunker": "nope"}}, "settings.chunker")]:
        r = client.post(f"/v1/kbs/{KB}/documents/reparse", json=body, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    assert client.post("/v1/kbs/unknown/documents/reparse", json={"all": True}, headers=ADMIN).status_code == 404


def test_ingest_uses_the_kb_settings_unless_overridden(client, app_services, tmp_path):
    services = app_services[1]
    client.patch(f"/v1/kbs/{KB}/settings", json={"chunk_size": 150, "chunk_overlap": 10, "tags": {"src": "kb"}},
                 headers=ADMIN)
    folder = tmp_path / "cli-folder"
    folder.mkdir()
    (folder / "a.md").write_bytes(TEXT)
    with services.kbs.writing(KB):  # what `rag ingest` builds without flags
        small = build_ingestor(services, KB).ingest_folder(folder).chunks_added
    with services.kbs.writing(KB):  # and with --chunk-size 2000 --chunk-overlap 0
        report = build_ingestor(services, KB, overrides={"chunk_size": 2000, "chunk_overlap": 0}).ingest_folder(folder)
    assert 0 < report.chunks_added < small
    assert services.catalog.find_doc_by_source(KB, "a.md").tags == {"src": "kb"}


def test_a_file_skipped_for_ocr_off_names_the_knowledge_bases_setting(client, tmp_path):
    from tests.unit import ocr_fixtures as of

    assert client.patch(f"/v1/kbs/{KB}/settings", json={"ocr": False}, headers=ADMIN).status_code == 200
    job = _upload(client, "notice.png", of.write_image(tmp_path, "notice.png").read_bytes())
    reason = job["files"][0]["reason"]
    assert "need OCR, which is off (the knowledge base's settings: ocr off)" in reason, job
