"""Managing a knowledge base of many documents in the console, in headless Chromium (issue 37): pages
of documents searched on the server, a document's tags and title edited (a bad tag named by the
server), documents selected and deleted or tagged in bulk, and API keys created (the secret shown
once) and revoked, with the first-run states of the keys page. Screenshots go to the test's tmp
folder (or RAG_SCREENSHOT_DIR) and, for a person to look at, to /tmp/console-shots/."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from api.app import create_app
from tests.integration.test_chat_page import CHROMIUM, Chromium
from tests.integration.test_console_page import screenshot, wait_for
from tests.unit.api_helpers import ADMIN_KEY, make_services, running_server
from rag.types import Chunk

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]

SHOTS = Path("/tmp/console-shots")
LIB = "lib"


def _library(services, n: int = 120) -> None:
    chunks = [Chunk(id=f"c{d:04d}-{i}", kb=LIB, doc_id=f"d{d:04d}", source=f"doc-{d:04d}.md", text=f"part {i} of {d}",
                    start=i * 20, end=i * 20 + 12, title=f"Memo {d}", tags={"team": "hr" if d % 2 else "ops"})
              for d in range(n) for i in range(2)]
    services.kbs.open_or_create(LIB).write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))


_shot = partial(screenshot, keep=SHOTS)


def _open(base: str, key: str | None, height: int = 1000) -> Chromium:
    browser = Chromium(width=1280, height=height)
    browser.open(f"{base}/console")
    wait_for(browser, "document.readyState === 'complete'")
    browser.evaluate(f"localStorage.clear(); localStorage.setItem('rag-lang', 'en'); localStorage.setItem('rag-kb', '{LIB}');"
                     + (f"localStorage.setItem('rag-api-key', '{key}');" if key else "")
                     + "window.beforeReload = true; location.reload(); true")
    for _ in range(50):  # the old page may answer, or be gone, while the reload starts
        try:
            wait_for(browser, "!window.beforeReload && document.readyState === 'complete' && "
                              "document.getElementById('kb').value === 'lib'")
            break
        except RuntimeError:  # "Inspected target navigated or closed"
            time.sleep(0.1)
    browser.evaluate("window.confirm = () => true; true")
    return browser


RANGE = "document.getElementById('docs-range').textContent"
ROWS = "[...document.querySelectorAll('#docs-table tbody tr')].filter(tr => tr.cells.length > 1)"


def _search(b, q: str = "", tag: str = "") -> None:
    b.evaluate(f"document.getElementById('doc-filter').value = {q!r}; document.getElementById('doc-tag').value = {tag!r};"
               "document.getElementById('doc-search').requestSubmit(); true")


def _button(b, label: str) -> None:
    b.evaluate(f"[...document.querySelectorAll('button')].find(x => x.getAttribute('aria-label') === {label!r}).click(); true")


def test_documents_paged_searched_tagged_and_bulk_deleted(tmp_path):
    services = make_services(tmp_path)
    _library(services)
    with running_server(create_app(services)) as base:
        b = _open(base, ADMIN_KEY)
        try:
            b.evaluate("document.getElementById('tab-docs').click(); true")
            assert wait_for(b, f"(r => r === '1–50 of 120' && r)({RANGE})")
            assert b.evaluate(f"{ROWS}.length") == 50 and b.evaluate("document.getElementById('docs-prev').disabled")
            b.evaluate("document.getElementById('docs-next').click(); true")
            wait_for(b, f"{RANGE} === '51–100 of 120'")
            assert b.evaluate(f"{ROWS}[0].cells[1].textContent").startswith("doc-0050.md")
            # search on the server, by name
            _search(b, "doc-011")
            wait_for(b, f"{RANGE} === '1–10 of 10'")
            _shot(b, "console-docs-search.png", tmp_path)
            # edit a document's tags and title; a bad tag is named by the server and shown in the row
            _button(b, "Edit doc-0110.md")
            wait_for(b, "!!document.getElementById('edit-tags')")
            b.evaluate("document.getElementById('edit-tags').value = 'team=legal, note=" + "x" * 201 + "';"
                       "document.querySelector('td.editor form').requestSubmit(); true")
            error = wait_for(b, "document.getElementById('edit-error').textContent")
            assert "(tags)" in error and "200 characters" in error, error
            _shot(b, "console-tag-error.png", tmp_path)
            b.evaluate("document.getElementById('edit-tags').value = 'team=legal, year=2024';"
                       "document.getElementById('edit-title').value = 'Legal memo <b>not bold</b>';"
                       "document.querySelector('td.editor form').requestSubmit(); true")
            wait_for(b, f"{ROWS}.some(tr => tr.cells[6].textContent === 'team=legal, year=2024')")
            name_cell = b.evaluate(f"{ROWS}.find(tr => tr.cells[1].textContent.startsWith('doc-0110.md')).cells[1].innerHTML")
            assert "&lt;b&gt;not bold&lt;/b&gt;" in name_cell  # shown as text, never as markup
            _search(b, "", "team=legal")
            wait_for(b, f"{RANGE} === '1–1 of 1'")
            _shot(b, "console-tag-edit.png", tmp_path)
            # select all on a page, tag them in bulk, then delete them in bulk
            _search(b, "doc-002")
            wait_for(b, f"{RANGE} === '1–10 of 10'")
            b.evaluate("document.getElementById('select-page').click(); true")
            assert b.evaluate("document.getElementById('bulk-count').textContent") == "10 selected"
            b.evaluate("document.getElementById('bulk-tags').value = 'batch=7';"
                       "document.getElementById('bulk-bar').requestSubmit(); true")
            wait_for(b, "document.getElementById('bulk-result').textContent === 'tagged 10, not found 0'")
            assert b.evaluate(f"{ROWS}.every(tr => tr.cells[6].textContent.includes('batch=7'))")
            for cell in range(2):
                b.evaluate(f"{ROWS}[{cell}].cells[0].querySelector('input').click(); true")
            b.evaluate("document.getElementById('select-page').click(); true")  # partial -> the whole page
            _shot(b, "console-bulk-selected.png", tmp_path)
            b.evaluate("document.getElementById('bulk-delete').click(); true")
            wait_for(b, "document.getElementById('bulk-result').textContent === 'deleted 10, not found 0'")
            wait_for(b, f"{RANGE} === '0–0 of 0'")
            _search(b)
            wait_for(b, f"{RANGE} === '1–50 of 110'")
            _shot(b, "console-bulk-deleted.png", tmp_path)
        finally:
            b.close()
    services.close()


def test_api_keys_created_once_and_revoked(tmp_path):
    services = make_services(tmp_path)
    services.kbs.open_or_create(LIB)
    with running_server(create_app(services)) as base:
        b = _open(base, ADMIN_KEY, height=800)
        try:
            b.evaluate("document.getElementById('tab-keys').click(); true")
            wait_for(b, "document.querySelector('#keys-table tbody').innerText.includes('No keys yet')")
            b.evaluate("document.getElementById('create-key').requestSubmit(); true")  # no name: the server names it
            assert "(name)" in wait_for(b, "document.getElementById('key-error').textContent")
            b.evaluate("document.getElementById('new-key-name').value = 'reader <i>x</i>';"
                       "document.getElementById('new-key-read').value = 'lib';"
                       "document.getElementById('create-key').requestSubmit(); true")
            secret = wait_for(b, "!document.getElementById('key-secret').hidden && document.getElementById('key-secret-value').textContent")
            assert secret.startswith("rag-")
            wait_for(b, "document.querySelector('#keys-table tbody').innerText.includes('reader <i>x</i>')")
            _shot(b, "console-key-created.png", tmp_path)
            b.evaluate("document.getElementById('key-secret-done').click(); true")
            assert b.evaluate("document.getElementById('key-secret').hidden && !document.getElementById('key-secret-value').textContent")
            assert secret not in b.evaluate("document.body.innerHTML + JSON.stringify(localStorage)")  # shown once
            # the new key is not the admin key: the page says so instead of listing keys
            b.evaluate(f"document.getElementById('key').value = {secret!r}; document.getElementById('key').dispatchEvent(new Event('change')); true")
            state = wait_for(b, "(s => !s.hidden && s.textContent)(document.getElementById('keys-state'))")
            assert "Only the admin key" in state, state
            _shot(b, "console-keys-notadmin.png", tmp_path)
            b.evaluate(f"document.getElementById('key').value = {ADMIN_KEY!r}; document.getElementById('key').dispatchEvent(new Event('change')); true")
            wait_for(b, "document.getElementById('keys-state').hidden && document.querySelectorAll('#keys-table tbody button').length === 1")
            _button(b, "Revoke reader <i>x</i>")
            wait_for(b, "document.querySelector('#keys-table tbody').innerText.includes('No keys yet')")
            _shot(b, "console-key-revoked.png", tmp_path)
        finally:
            b.close()
        assert services.settings.api_admin_key is not None
    services.close()


@pytest.mark.parametrize("settings, expected", [({"api_admin_key": None}, "This server has no admin key"),
                                                ({"auth_disabled": True}, "Authentication is off")])
def test_keys_page_first_run_states(tmp_path, settings, expected):
    services = make_services(tmp_path, **settings)
    services.kbs.open_or_create(LIB)
    key = services.settings.auth_disabled or None
    if not key:
        from api.auth import ApiKeyStore

        store = ApiKeyStore(services.database("api_keys"))
        key = store.create("someone", read=["*"]).secret
        store.close()
    with running_server(create_app(services)) as base:
        b = _open(base, key if isinstance(key, str) else None, height=600)
        try:
            b.evaluate("document.getElementById('tab-keys').click(); true")
            state = wait_for(b, "(s => !s.hidden && s.textContent)(document.getElementById('keys-state'))")
            assert expected in state, state
            _shot(b, f"console-keys-{'noadmin' if 'api_admin_key' in settings else 'authoff'}.png", tmp_path)
        finally:
            b.close()
    services.close()
