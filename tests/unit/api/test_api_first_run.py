"""The first run of the pages (issue 35): opened without an API key, the chat page and the console
say how to make one (the exact `rag keys create` command), the list call they make answers 401
with the JSON body they read, the documented key prefix is the real one, and the favicon loads
under the pages' Content-Security-Policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.auth import KEY_PREFIX, ApiKeyStore
from tests.unit.api_helpers import make_app

ROOT = Path(__file__).resolve().parents[3]
KEY_COMMAND = "rag keys create NAME --write '*'"


@pytest.fixture
def client(tmp_path):
    app, services = make_app(tmp_path, api_admin_key=None)  # as `rag serve` starts without RAG_API_ADMIN_KEY
    with TestClient(app) as c:
        c.data_dir = services.settings.data_dir
        yield c


@pytest.mark.parametrize("page, script", [("/", "/static/index.js"), ("/console", "/static/console.js")])
def test_pages_say_how_to_make_a_key(client, page, script):
    html = client.get(page).text
    assert KEY_COMMAND in html.replace("&#39;", "'") and f"<code>{KEY_PREFIX}</code>" in html
    assert re.search(r'<div id="key-help"[^>]*\bhidden\b', html)  # shown by the script on 401/403 only
    js = client.get(script).text
    assert '$("key-help").hidden' in js or 'help.hidden = status !== 401 && status !== 403' in js


def test_console_never_says_no_knowledge_base_when_the_list_failed(client):
    js = client.get("/static/console.js").text
    assert 'state.kbs === null ? t("kbsUnknown")' in js and "state.kbs = null; showKeyHelp(e)" in js


def test_list_without_a_key_is_401_with_the_body_the_pages_read(client):
    r = client.get("/v1/kbs")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    error = r.json()["error"]
    assert error["code"] == "unauthorized" and "API key" in error["message"]
    store = ApiKeyStore(client.data_dir / "api_keys.sqlite")  # what `rag keys create` writes
    try:
        secret = store.create("browser", [], ["*"]).secret
    finally:
        store.close()
    assert secret.startswith(KEY_PREFIX)
    assert client.get("/v1/kbs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_docs_use_the_real_key_prefix():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    stale = [f.name for f in files if re.search(r"\brk-", f.read_text(encoding="utf-8"))]
    assert not stale, f"key prefix rk- in {stale}; keys start with {KEY_PREFIX}"


@pytest.mark.parametrize("page", ["/", "/console"])
def test_favicon_is_served_and_linked(client, page):
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get(page).text
    for path in ("/favicon.ico", "/static/favicon.svg"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml"), path
        assert r.content.startswith(b"<svg")
    csp = client.get(page).headers["content-security-policy"]
    assert "img-src 'self'" in csp
