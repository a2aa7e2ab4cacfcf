"""Re-embedding a knowledge base from the console, in headless Chromium (issue 37): a knowledge base
built with another embedding model than the server's is still listed (with a "re-embed" mark) and
its settings card shows a notice naming both models with a "Re-embed now" button; the documents
list still loads and the page shows the server's 409 text where a call is refused; the button starts a
`reindex` job shown in the job panel and the recent jobs, and once it has succeeded the notice is
gone and the knowledge base answers again. Screenshots go to the test's tmp folder and, for a person
to look at, to /tmp/console-shots-reembed/."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.testing import HashEmbedder
from tests.integration.test_chat_page import CHROMIUM
from tests.integration.test_console_manage_page import LIB, _open
from tests.integration.test_console_page import screenshot, wait_for
from tests.unit.api_helpers import ADMIN, ADMIN_KEY, make_services, running_server
from tests.unit.kb_fixtures import make_chunks

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]

SHOTS = Path("/tmp/console-shots-reembed")
ROWS = "[...document.querySelectorAll('#docs-table tbody tr')].filter(tr => tr.cells.length > 1)"
NOTICE = "document.getElementById('kbs-reembed')"


_shot = partial(screenshot, keep=SHOTS)


def _query(base: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/query", headers=ADMIN, timeout=30,
                      json={"question": "How long is the warranty?", "kb": LIB, "generate": False, "limit": 3})


def test_a_knowledge_base_of_another_model_is_re_embedded_from_its_settings(tmp_path):
    built = make_services(tmp_path)  # 64-dimension hash embedder
    chunks = make_chunks(LIB)
    built.kbs.open_or_create(LIB).write_documents(chunks, built.embedder.encode_corpus([c.match_text for c in chunks]))
    services = built.with_(embedder=HashEmbedder(dim=32))  # restarted with another model
    built.close()
    with running_server(create_app(services)) as base:
        assert _query(base).status_code == 409
        b = _open(base, ADMIN_KEY, height=1100)
        try:
            # still listed, marked
            wait_for(b, "[...document.querySelectorAll('#kbs-table tbody tr')].some(tr => tr.innerText.includes('re-embed'))")
            _shot(b, "reembed-kb-list.png", tmp_path)
            b.evaluate("document.getElementById('tab-docs').click(); true")
            text = wait_for(b, f"!{NOTICE}.hidden && document.getElementById('kbs-reembed-msg').textContent")
            assert "hash-bow-64 (64 dimensions)" in text and "hash-bow-32 (32 dimensions)" in text, text
            assert b.evaluate("document.getElementById('kbs-reembed-btn').textContent") == "Re-embed now"
            wait_for(b, f"{ROWS}.length > 0")  # the documents list reads the catalog only: it loads
            _shot(b, "reembed-notice.png", tmp_path)
            # a call the server refuses (a document's chunks open the knowledge base): its text is shown
            b.evaluate(f"{ROWS}[0].querySelector('button, a').click(); true")
            refused = wait_for(b, "document.getElementById('doc-meta').className === 'error' && "
                                  "document.getElementById('doc-meta').textContent")
            assert "was built with embedding model 'hash-bow-64'" in refused, refused
            _shot(b, "reembed-refused-call.png", tmp_path, "#doc-view")
            b.evaluate("window.scrollTo(0, 0); true")
            # re-embed now: a reindex job, shown in the job panel and the recent jobs; the notice goes
            b.evaluate("document.getElementById('kbs-reembed-btn').click(); true")
            msg = wait_for(b, "document.getElementById('kbs-msg').textContent.startsWith('re-embedding: ') && "
                              "document.getElementById('kbs-msg').textContent")
            assert msg == "re-embedding: succeeded", msg
            wait_for(b, f"{NOTICE}.hidden")
            wait_for(b, "document.querySelector('#jobs-table tbody').innerText.includes('reindex')")
            row = b.evaluate("[...document.querySelectorAll('#jobs-table tbody tr')]"
                             ".find(tr => tr.cells[1].textContent.startsWith('reindex')).innerText")
            assert "succeeded" in row and f"{len(chunks)}/{len(chunks)} chunks embedded" in row, row
            assert "hash-bow-32 (32 dimensions)" in b.evaluate("document.getElementById('kbs-model').textContent")
            assert b.evaluate("document.getElementById('job-status').textContent").startswith(
                "Re-embedding finished: succeeded — 7/7 chunks embedded".replace("7", str(len(chunks))))
            # the open document's chunks load now (the 409 it showed is gone)
            wait_for(b, "document.getElementById('doc-meta').className !== 'error' && "
                        "document.querySelectorAll('#chunk-list .chunk').length > 0")
            time.sleep(0.4)  # the progress bar's width transition
            _shot(b, "reembed-done.png", tmp_path, "#kb-settings")
            _shot(b, "reembed-doc-reopened.png", tmp_path, "#doc-view")
            _shot(b, "reembed-jobs.png", tmp_path, "#job")
            r = _query(base)
            assert r.status_code == 200 and len(r.json()["sources"]) == 3, r.text
        finally:
            b.close()
    services.close()
