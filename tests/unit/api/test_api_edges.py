"""Smaller edges of the API: the pages' Content-Security-Policy (and no inline script or style to
need anything looser), upload names without bidirectional controls or other invisible format
characters, the knowledge-base count of `/readyz` for the admin key only, and the settings of the
request limits."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.middleware import CONTENT_SECURITY_POLICY
from api.uploads import sanitize_filename
from rag.errors import ConfigError
from rag.settings import load_settings
from tests.unit.api_helpers import ADMIN, make_app, wait_for_job


@pytest.fixture
def client(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        yield client


def test_pages_and_static_files_carry_a_strict_content_security_policy(client):
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    for page in ("/", "/console"):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert r.headers["x-content-type-options"] == "nosniff"
        html = r.text
        # what the policy would block: inline scripts, event handler attributes, style elements and attributes
        assert all(re.search(r"\bsrc=", tag) for tag in re.findall(r"<script\b[^>]*>", html)), page
        assert not re.search(r"\son[a-z]+\s*=", html) and "javascript:" not in html, page
        assert "<style" not in html and not re.search(r"\sstyle\s*=", html), page
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            served = client.get(asset)
            assert served.status_code == 200, asset
            assert served.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # the scripts build no markup with inline styles or handlers either
    for script in ("/static/index.js", "/static/console.js"):
        text = client.get(script).text
        assert not re.search(r"""setAttribute\(\s*["'](?:style|on[a-z]+)""", text), script
        assert not re.search(r"innerHTML\s*=\s*[^;]*(?:style=|on[a-z]+=)", text), script
    assert "content-security-policy" not in client.get("/healthz").headers  # the API answers are left alone


@pytest.mark.parametrize(("raw", "clean"), [
    ("invoice\u202efdp.txt", "invoicefdp.txt"),  # shows as "invoicetxt.pdf" with the override kept
    ("\u2066a\u2069\u200eb\u200f\u061c.md", "ab.md"),
    ("zero\u200bwidth\ufeff\u00ad.md", "zerowidth.md"),
    ("x\x85y\u2028.md", "x_y.md"),  # C1 control replaced, line separator dropped
    ("میخواهم\u200c.md", "میخواهم\u200c.md"),  # the joiners stay: they are part of the spelling
])
def test_upload_names_lose_invisible_format_characters(raw, clean):
    assert sanitize_filename(raw) == clean


def test_an_upload_named_with_a_bidi_override_is_stored_without_it(client, tmp_path):
    files = {"files": ("notes\u202egnp.txt", b"The kettle warranty lasts three years. " * 5)}
    r = client.post("/v1/kbs/handbook/documents", files=files, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.json()["files"][0]["filename"] == "notesgnp.txt"
    assert wait_for_job(client, r.json()["job_id"])["status"] == "succeeded"
    sources = [d["source"] for d in client.get("/v1/kbs/handbook/documents", headers=ADMIN).json()]
    assert "notesgnp.txt" in sources and not any("\u202e" in s for s in sources)


def test_only_the_admin_key_sees_the_knowledge_base_count(client):
    key = client.post("/v1/keys", json={"name": "reader", "read": ["handbook"]}, headers=ADMIN).json()["key"]
    admin = client.get("/readyz", headers=ADMIN).json()
    assert admin["checks"]["store"]["knowledge_bases"] == 1
    reader = client.get("/readyz", headers={"Authorization": f"Bearer {key}"}).json()
    assert reader["checks"]["store"]["ok"] is not None and "knowledge_bases" not in reader["checks"]["store"]


def test_request_limit_settings_are_checked_at_start(monkeypatch):
    with pytest.raises(ConfigError, match="max_request_mb"):
        load_settings(max_upload_mb=300)  # a whole file would not fit the 200 MB default
    with pytest.raises(ConfigError, match="request_body_timeout"):
        load_settings(request_body_timeout=0)
    with pytest.raises(ConfigError, match="max_concurrent_uploads_per_key"):
        load_settings(max_concurrent_uploads_per_key=0)
    monkeypatch.setenv("RAG_MAX_REQUEST_MB", "500")
    monkeypatch.setenv("RAG_REQUEST_BODY_TIMEOUT", "30")
    settings = load_settings(max_upload_mb=300)
    assert (settings.max_request_mb, settings.request_body_timeout, settings.max_concurrent_uploads_per_key) == (
        500, 30.0, 4)
