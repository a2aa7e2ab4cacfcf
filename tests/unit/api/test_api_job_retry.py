"""Progress and failures of ingest jobs: per-file results and OCR pages in the job record, the bytes
of failed files kept for a retry (and removed after RAG_FAILED_UPLOAD_KEEP_HOURS), and
`POST /v1/jobs/{id}/retry` re-running them once the cause is fixed."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

import ingest.formats.ocr as ocr_module
from rag.errors import ModelUnavailable
from tests.unit.api_helpers import ADMIN, make_app, wait_for_job
from tests.unit.ocr_fixtures import ScriptedEngine, write_image_pdf

KB = "scans"
GOOD = b"# Holidays\n\nEmployees get twenty-five days of paid holiday a year.\n"


@pytest.fixture
def app_services(tmp_path, monkeypatch):
    monkeypatch.setattr(ocr_module, "_shared", ScriptedEngine())  # no OCR model: scripted lines
    return make_app(tmp_path)


@pytest.fixture
def client(app_services):
    with TestClient(app_services[0]) as c:
        assert c.post("/v1/kbs", json={"name": KB}, headers=ADMIN).status_code == 201
        yield c


def _upload(client, files) -> dict:
    r = client.post(f"/v1/kbs/{KB}/documents", files=[("files", f) for f in files], headers=ADMIN)
    assert r.status_code == 202, r.text
    return wait_for_job(client, r.json()["job_id"])


def _retry(client, job_id: str) -> tuple[dict, dict]:
    r = client.post(f"/v1/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 202, r.text
    return r.json(), wait_for_job(client, r.json()["job_id"])


def test_a_file_skipped_with_ocr_off_is_retried_after_turning_ocr_on(client, app_services, tmp_path):
    data_dir = app_services[1].data_dir
    scan = write_image_pdf(tmp_path, "scan.pdf", pages=3).read_bytes()
    client.patch(f"/v1/kbs/{KB}/settings", json={"ocr": False}, headers=ADMIN)
    job = _upload(client, [("good.md", GOOD), ("scan.pdf", scan)])
    assert job["status"] == "partial"
    failed = {e["file"]: e["reason"] for e in job["errors"]}
    assert list(failed) == ["scan.pdf"] and failed["scan.pdf"], job
    kept = data_dir / "uploads" / KB / ".retry" / job["id"] / "scan.pdf"
    assert kept.read_bytes() == scan and not (data_dir / "uploads" / KB / "scan.pdf").exists()
    assert [d["source"] for d in client.get(f"/v1/kbs/{KB}/documents", headers=ADMIN).json()] == ["good.md"]
    client.patch(f"/v1/kbs/{KB}/settings", json={"ocr": True}, headers=ADMIN)  # the cause, fixed
    accepted, retried = _retry(client, job["id"])
    assert accepted["retry_of"] == job["id"] and [f["filename"] for f in accepted["files"]] == ["scan.pdf"]
    assert retried["status"] == "succeeded" and retried["retry_of"] == job["id"], retried
    entry = retried["files"][0]
    assert entry["status"] == "indexed" and (entry["pages_done"], entry["pages_total"]) == (3, 3)  # OCR pages
    assert not kept.parent.exists()  # the kept bytes moved into the retry, then into the uploads folder
    assert (data_dir / "uploads" / KB / "scan.pdf").read_bytes() == scan
    # nothing failed is left: a second retry says so, naming the job
    r = client.post(f"/v1/jobs/{retried['id']}/retry", headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "job_id"


def test_ocr_pages_are_counted_on_the_file_that_has_them_when_two_share_a_stem(tmp_path, monkeypatch):
    from tests.unit.ocr_fixtures import write_multipage_tiff

    monkeypatch.setattr(ocr_module, "_shared", ScriptedEngine())
    app, _ = make_app(tmp_path, ocr_max_pages=1)  # each file stops after one page: left unfinished
    pdf = write_image_pdf(tmp_path, "scan.pdf", pages=2).read_bytes()
    tiff = write_multipage_tiff(tmp_path, "scan.tiff", blanks=()).read_bytes()
    with TestClient(app) as client:
        assert client.post("/v1/kbs", json={"name": KB}, headers=ADMIN).status_code == 201
        job = _upload(client, [("scan.pdf", pdf), ("scan.tiff", tiff)])
    pages = {e["filename"]: (e.get("pages_done"), e.get("pages_total")) for e in job["files"]}
    assert pages == {"scan.pdf": (1, 2), "scan.tiff": (1, 3)}, job


def test_a_job_failed_by_a_model_outage_is_retried_when_the_model_is_back(client, app_services):
    services = app_services[1]
    embed = services.embedder.encode_corpus
    outage = {"on": True}

    def flaky(texts):
        if outage["on"]:
            raise ModelUnavailable("the embedding server is unreachable")
        return embed(texts)

    services.embedder.encode_corpus = flaky
    job = _upload(client, [("good.md", GOOD), ("more.md", GOOD + b"\nAnd two more days at year end.\n")])
    assert job["status"] == "failed" and "unreachable" in job["error"]
    outage["on"] = False
    _, retried = _retry(client, job["id"])
    assert retried["status"] == "succeeded" and sorted(f["filename"] for f in retried["files"]) == ["good.md", "more.md"]
    assert len(client.get(f"/v1/kbs/{KB}/documents", headers=ADMIN).json()) == 2


def test_kept_bytes_expire_and_a_file_failing_again_is_kept_again(client, app_services):
    services = app_services[1]
    job = _upload(client, [("empty.md", b"")])
    assert job["status"] == "failed"
    _, again = _retry(client, job["id"])  # the cause is in the bytes: it fails again, kept for the next try
    retry_root = services.data_dir / "uploads" / KB / ".retry"
    assert again["status"] == "failed" and (retry_root / again["id"] / "empty.md").exists()
    old = (retry_root / again["id"]).stat().st_mtime - (services.settings.failed_upload_keep_hours * 3600 + 60)
    os.utime(retry_root / again["id"], (old, old))
    _upload(client, [("good.md", GOOD)])  # a job's end cleans the knowledge base's expired kept files
    assert not (retry_root / again["id"]).exists()
    r = client.post(f"/v1/jobs/{again['id']}/retry", headers=ADMIN)
    assert r.status_code == 422 and "not kept" in r.json()["error"]["message"]
    assert client.post("/v1/jobs/job_0000000000000000/retry", headers=ADMIN).status_code == 404


def test_each_files_result_reaches_the_progress_callback_as_it_finishes(app_services, tmp_path):
    from ingest.service import build_ingestor

    services = app_services[1]
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.md").write_bytes(GOOD)
    (folder / "b.md").write_bytes(b"")
    steps = []
    with services.kbs.writing(KB):
        build_ingestor(services, KB, progress=steps.append).ingest_folder(folder)
    done = [(s.done.source, s.done.status) for s in steps if s.done]
    assert sorted(done) == [("a.md", "indexed"), ("b.md", "skipped")]
    assert all(s.files_done >= 1 for s in steps if s.done)
