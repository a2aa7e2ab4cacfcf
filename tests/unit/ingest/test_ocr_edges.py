"""Scans through the edges: `rag ingest --ocr/--no-ocr` and its summary, and image uploads through
the API (accepted type, per-file errors, `ocr` fields on the query's sources). The process-wide
engine is replaced by the scripted one."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app
from rag.adapters.llm_fake import ScriptedLLM
from tests.unit import ocr_fixtures as of
from tests.unit.api_helpers import ADMIN, make_app, wait_for_job

NOTICE = ["Notice to tenants", "The water supply will be shut off on Friday from nine to noon."]


@pytest.fixture
def scripted(monkeypatch):
    import ingest.formats.ocr as ocr_module

    engine = of.ScriptedEngine(of.paragraph_lines(NOTICE))
    monkeypatch.setattr(ocr_module, "shared_engine", lambda: engine)
    return engine


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    monkeypatch.delenv("RAG_OCR", raising=False)
    docs = tmp_path / "docs"
    docs.mkdir()
    of.write_image(docs, "notice.png")
    of.write_image_pdf(docs, "scan.pdf", pages=2)
    (docs / "notes.txt").write_text("Plain notes about the building. " * 5, encoding="utf-8")
    return docs


def test_ingest_summary_shows_ocr_time_and_no_ocr_skips_images(env, scripted):
    off = CliRunner().invoke(app, ["ingest", str(env), "--kb", "off", "--no-ocr", "-q"])
    assert off.exit_code == 3, off.output  # the image and the scan are skipped, the notes indexed
    assert "files indexed: 1" in off.output and "OCR" not in off.output.split("time:")[1].splitlines()[0]
    assert "skipped  notice.png: image files need OCR, which is off (--no-ocr)" in off.output
    assert "skipped  scan.pdf:" in off.output and "which is off: --no-ocr" in off.output
    assert scripted.calls == []

    on = CliRunner().invoke(app, ["ingest", str(env), "--kb", "on", "-q"])
    assert on.exit_code == 0, on.output
    assert "files indexed: 3" in on.output and ", OCR " in on.output
    assert len(scripted.calls) == 3  # one image, two PDF pages

    asked = CliRunner().invoke(app, ["ask", "When is the water supply shut off?", "--kb", "on", "--no-generate",
                                     "--json"])
    top = json.loads(asked.stdout)["sources"][0]
    assert top["document"] in {"notice.png", "scan.pdf"} and top["ocr"] is True and top["ocr_confidence"] == 0.9


def test_ocr_setting_is_validated(env, monkeypatch):
    monkeypatch.setenv("RAG_OCR", "sometimes")
    result = CliRunner().invoke(app, ["ingest", str(env), "--kb", "x", "-q"])
    assert result.exit_code == 2 and "ocr" in result.output


def test_image_uploads_are_ocred_and_a_corrupt_one_is_reported(tmp_path, scripted):
    application, _ = make_app(tmp_path, llm=ScriptedLLM(default="The water is off on Friday [1]."))
    png = io.BytesIO()
    of.scan_image().save(png, "PNG")
    with TestClient(application) as client:
        client.post("/v1/kbs", json={"name": "building"}, headers=ADMIN)
        r = client.post("/v1/kbs/building/documents", headers=ADMIN,
                        files=[("files", ("notice.png", png.getvalue())),
                               ("files", ("photo.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 broken"))])
        assert r.status_code == 202, r.text
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "partial", job
        by_name = {f["filename"]: f for f in job["files"]}
        assert job["summary"]["ocr_seconds"] > 0
        assert by_name["notice.png"]["status"] == "indexed"
        assert by_name["photo.webp"]["status"] == "skipped" and "corrupt" in by_name["photo.webp"]["reason"]
        answer = client.post("/v1/query", json={"question": "When is the water supply shut off?", "kb": "building"},
                             headers=ADMIN).json()
        assert answer["sources"][0]["document"] == "notice.png"
        assert answer["sources"][0]["ocr"] is True and answer["sources"][0]["ocr_confidence"] == 0.9
