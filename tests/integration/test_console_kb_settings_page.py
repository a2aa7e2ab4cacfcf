"""A knowledge base's settings, re-parse, URL import, job failures and usage in the console, in
headless Chromium (issue 37): the chunk size changed in the settings card (the page says how many
documents wait for a re-parse), all re-parsed (the chunk count in the documents table changes),
a page imported by URL from a loopback server, a failed import listed with its reason and a retry
button, and the usage tab after a few answers. Screenshots go to the test's tmp folder and, for a
person to look at, to /tmp/console-shots-kbsettings/."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from tests.integration.test_chat_page import CHROMIUM
from tests.integration.test_console_manage_page import LIB, _open
from tests.integration.test_console_page import screenshot, wait_for
from tests.unit.api.url_server import url_server
from tests.unit.api_helpers import ADMIN, ADMIN_KEY, answering_llm, make_services, running_server

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]

SHOTS = Path("/tmp/console-shots-kbsettings")
TEXT = "\n\n".join(f"Section {i}. " + "Travel is booked through the travel desk, trains before flights. " * 4
                   for i in range(10)).encode()
ROWS = "[...document.querySelectorAll('#docs-table tbody tr')].filter(tr => tr.cells.length > 1)"


_shot = partial(screenshot, keep=SHOTS)


def _api(base: str, method: str, path: str, **kwargs) -> dict:
    r = httpx.request(method, base + path, headers=ADMIN, timeout=30, **kwargs)
    assert r.status_code < 300, r.text
    return r.json()


def _wait_job(base: str, job_id: str) -> dict:
    for _ in range(300):
        job = _api(base, "GET", f"/v1/jobs/{job_id}")
        if job["status"] in ("succeeded", "partial", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def _chunks_of(b, source: str) -> int:
    return int(b.evaluate(f"{ROWS}.find(tr => tr.cells[1].textContent.startsWith({source!r})).cells[2].textContent"))


def test_settings_reparse_url_import_retry_and_usage(tmp_path):
    services = make_services(tmp_path, llm=answering_llm("Travel is booked through the travel desk [1]."),
                             url_import_allow_private=True)
    with url_server() as pages, running_server(create_app(services)) as base:
        _api(base, "POST", "/v1/kbs", json={"name": LIB, "description": "Travel rules"})
        job = _api(base, "POST", f"/v1/kbs/{LIB}/documents", files=[("files", ("travel.md", TEXT)),
                                                                   ("files", ("desk.md", TEXT[:400]))])
        assert _wait_job(base, job["job_id"])["status"] == "succeeded"
        for question in ("How is travel booked?", "Who books trains?"):
            _api(base, "POST", "/v1/query", json={"question": question, "kb": LIB})
        b = _open(base, ADMIN_KEY, height=1100)
        try:
            b.evaluate("document.getElementById('tab-docs').click(); true")
            wait_for(b, f"{ROWS}.length === 2 && document.getElementById('kbs-size').value === '800'")
            before = _chunks_of(b, "travel.md")
            assert "hash" in b.evaluate("document.getElementById('kbs-model').textContent")
            # a bad overlap is named by the server, then a smaller chunk size saved: a re-parse is offered
            b.evaluate("document.getElementById('kbs-overlap').value = '900';"
                       "document.getElementById('kb-settings').requestSubmit(); true")
            assert "(chunk_overlap)" in wait_for(b, "document.getElementById('kbs-error').textContent")
            b.evaluate("document.getElementById('kbs-size').value = '200'; document.getElementById('kbs-overlap').value = '20';"
                       "document.getElementById('kb-settings').requestSubmit(); true")
            notice = wait_for(b, "!document.getElementById('kbs-reparse-row').hidden && "
                                 "document.getElementById('kbs-msg').textContent")
            assert notice.startswith("2 document(s)") and "re-parse" in notice
            _shot(b, "kb-settings-saved.png", tmp_path)
            b.evaluate("document.getElementById('kbs-reparse').click(); true")
            wait_for(b, f"{ROWS}.length === 2 && Number({ROWS}.find(tr => tr.cells[1].textContent.startsWith('travel.md'))"
                        f".cells[2].textContent) > {before}")
            wait_for(b, "document.getElementById('kbs-reparse-row').hidden")
            after = _chunks_of(b, "travel.md")
            assert after > before
            _shot(b, "kb-reparsed.png", tmp_path)
            # one document re-parsed from the bulk bar with a larger size, for this re-parse only
            b.evaluate(f"{ROWS}.find(tr => tr.cells[1].textContent.startsWith('travel.md')).cells[0].querySelector('input').click();"
                       "document.getElementById('bulk-size').value = '1000'; document.getElementById('bulk-reparse').click(); true")
            wait_for(b, "document.getElementById('bulk-result').textContent.startsWith('re-parse of 1 document(s): succeeded')")
            wait_for(b, f"Number({ROWS}.find(tr => tr.cells[1].textContent.startsWith('travel.md')).cells[2].textContent) < {after}")
            assert b.evaluate("document.getElementById('kbs-size').value") == "200"  # the settings stay
            _shot(b, "kb-bulk-reparsed.png", tmp_path, "#docs-table")
            # import a page by URL; a failed import is listed with its reason and a retry button
            b.evaluate(f"document.getElementById('url-input').value = '{pages}/to-policy';"
                       "document.getElementById('url-form').requestSubmit(); true")
            wait_for(b, f"{ROWS}.some(tr => tr.cells[1].textContent.startsWith('policy.html'))")
            b.evaluate(f"document.getElementById('url-input').value = '{pages}/missing';"
                       "document.getElementById('url-form').requestSubmit(); true")
            wait_for(b, "document.querySelector('#jobs-table tbody').innerText.includes('HTTP 404')")
            assert b.evaluate("[...document.querySelectorAll('#jobs-table button')].some(x => x.textContent === 'Retry failed files')")
            _shot(b, "kb-url-import-and-jobs.png", tmp_path, "#job")
            # a refused URL is named by the server
            b.evaluate("document.getElementById('url-input').value = 'ftp://example.com/a.txt';"
                       "document.getElementById('url-form').requestSubmit(); true")
            assert "(url)" in wait_for(b, "document.getElementById('url-error').textContent")
            # usage: the answers so far, the most cited and the never-cited documents
            b.evaluate("document.getElementById('tab-usage').click(); true")
            totals = wait_for(b, "document.getElementById('usage-totals').textContent")
            assert totals.startswith("2 questions"), totals
            wait_for(b, "document.querySelectorAll('#usage-never li').length > 0")
            assert "travel.md" in b.evaluate("document.getElementById('usage-top').innerText")
            never = b.evaluate("[...document.querySelectorAll('#usage-never li')].map(li => li.textContent)")
            assert "policy.html" in never
            _shot(b, "kb-usage.png", tmp_path)
        finally:
            b.close()
    services.close()
