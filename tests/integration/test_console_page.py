"""The knowledge-base console at `/console` in headless Chromium (Debian `chromium`, driven over the
DevTools pipe like the chat page test): create a knowledge base, drop three files on it (one
Chinese), wait for the ingest job, open a document's chunks and see one highlighted in the parsed
text, run a retrieval test with provenance, delete a document; screenshots are real rendered pages.
Install `fonts-noto-cjk` so the Chinese text renders."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import pytest

from api.app import create_app
from tests.integration.test_chat_page import CHROMIUM, Chromium
from tests.unit.api_helpers import make_services, running_server

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]

FILES = {
    "kettle.md": "# Zephyr Kettle Manual\n\n## Warranty\n\nThe Zephyr kettle warranty lasts three years from the date "
                 "of purchase.\n\n## Cleaning\n\nDescale the kettle monthly with citric acid.\n",
    "休假制度.md": "# 员工休假制度\n\n## 年假\n\n员工每年享有十五天带薪年假。年假需要提前两周向直属经理申请。\n\n"
                 "## 病假\n\n病假超过三天需要提供医院证明。\n",
    "faq.csv": "question,answer\nHow do I reset the kettle?,Hold the button for ten seconds.\n",
}


def wait_for(browser: Chromium, condition: str, timeout: float = 60.0) -> object:
    """Poll a JS expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}: {browser.evaluate('document.body.innerText')}")
        time.sleep(0.1)


def screenshot(browser: Chromium, name: str, tmp_path: Path, scroll_to: str | None = None, *,
               keep: Path | None = None):
    """A screenshot of the page (after scrolling the element `scroll_to` selects to the top) into
    RAG_SCREENSHOT_DIR or `tmp_path`, and into `keep` too (a folder for a person to look at); the
    image, checked not blank."""
    from PIL import Image

    if scroll_to:
        browser.evaluate(f"document.querySelector({scroll_to!r}).scrollIntoView({{block: 'start'}}); true")
        time.sleep(0.2)
    png = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
    (Path(os.environ.get("RAG_SCREENSHOT_DIR", tmp_path)) / name).write_bytes(png)
    if keep is not None:
        keep.mkdir(exist_ok=True)
        (keep / name).write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank page"
    return image


@pytest.fixture
def console(tmp_path):
    services = make_services(tmp_path, auth_disabled=True, api_admin_key=None, chunk_size=120, chunk_overlap=20)
    with running_server(create_app(services)) as base:
        browser = Chromium(width=1200, height=900)
        try:
            browser.open(f"{base}/console")
            wait_for(browser, "document.readyState === 'complete' && !!document.getElementById('kbs-table')")
            browser.evaluate("localStorage.setItem('rag-lang', 'en'); window.confirm = () => true; true")
            yield browser
        finally:
            browser.close()
    services.close()


def test_console_create_upload_inspect_test_delete(console, tmp_path):
    b = console
    # create a knowledge base
    b.evaluate("document.getElementById('new-kb').value = 'demo'; document.getElementById('create-kb').requestSubmit(); true")
    wait_for(b, "[...document.querySelectorAll('#kbs-table tbody td')].some(td => td.textContent.startsWith('demo'))")
    b.evaluate("[...document.querySelectorAll('#kbs-table button')].find(x => x.getAttribute('aria-label') === 'Open demo').click(); true")
    wait_for(b, "document.getElementById('panel-docs').classList.contains('active')")
    # drop three files on the drop zone, as a user dragging them from a file manager
    files = json.dumps(FILES, ensure_ascii=False)
    b.evaluate(f"""(() => {{
      const dt = new DataTransfer();
      for (const [name, text] of Object.entries({files})) dt.items.add(new File([text], name));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', {{dataTransfer: dt, bubbles: true}}));
      return true; }})()""")
    status = wait_for(b, "(s => /succeeded|partial|failed/.test(s) && s)(document.getElementById('job-status').textContent)")
    assert "succeeded" in status, status
    rows = wait_for(b, "(r => r.length === 3 && r)([...document.querySelectorAll('#docs-table tbody tr')].map(tr => tr.cells.length > 1 ? tr.cells[1].textContent : ''))")
    assert any("休假制度.md" in r for r in rows)
    job = b.evaluate("[...document.querySelectorAll('#job-files tbody tr')].map(tr => tr.cells[1].textContent)")
    assert job == ["indexed"] * 3
    # open the Chinese document: chunks in order, one highlighted inside the parsed text
    b.evaluate("[...document.querySelectorAll('#docs-table button')].find(x => x.getAttribute('aria-label') === 'Open 休假制度.md').click(); true")
    wait_for(b, "document.querySelectorAll('#chunk-list .chunk').length >= 2 && document.getElementById('doc-text').textContent.length > 0")
    picked = b.evaluate("""(() => { const c = document.querySelectorAll('#chunk-list .chunk')[1]; c.click();
      const m = document.getElementById('chunk-mark');
      return {mark: m && m.textContent, chunk: c.querySelector('.text').textContent}; })()""")
    assert picked["mark"] == picked["chunk"] and picked["mark"]
    screenshot(b, "console-document.png", tmp_path)
    # retrieval test: ranked chunks with fused score and per-list provenance, nothing generated
    b.evaluate("document.getElementById('tab-test').click(); document.getElementById('test-q').value = '年假需要提前多久申请';"
               "document.getElementById('test-form').requestSubmit(); true")
    hits = wait_for(b, "(h => h.length && h)([...document.querySelectorAll('#test-hits .hit')].map(x => x.textContent))")
    assert "提前两周" in hits[0] and "dense #" in hits[0] and "bm25 #" in hits[0]
    assert "reranking: off (no model)" in b.evaluate("document.getElementById('rerank-text').textContent")
    assert b.evaluate("document.getElementById('test-rerank').disabled") is True
    assert "ms" in b.evaluate("document.getElementById('test-timings').textContent")
    screenshot(b, "console-retrieval.png", tmp_path)
    # delete a document
    b.evaluate("document.getElementById('tab-docs').click(); true")
    b.evaluate("[...document.querySelectorAll('#docs-table button')].find(x => x.getAttribute('aria-label') === 'Delete faq.csv').click(); true")
    wait_for(b, "document.querySelectorAll('#docs-table tbody tr').length === 2")
    # settings view
    b.evaluate("document.getElementById('tab-settings').click(); true")
    settings = wait_for(b, "document.getElementById('settings-json').textContent")
    assert '"embed_model"' in settings
    screenshot(b, "console-settings.png", tmp_path)


FIRST_RUN = "(() => { const h = document.getElementById('key-help'); return h && !h.hidden ? h.innerText : ''; })()"


def test_first_run_without_a_key_says_how_to_make_one(tmp_path):
    """As `rag serve` starts without RAG_API_ADMIN_KEY and no key in the browser: the console shows
    the exact command that makes a key, and never "No knowledge base yet" (two exist)."""
    services = make_services(tmp_path, api_admin_key=None)  # the knowledge base "handbook"
    services.kbs.open_or_create("manuals")
    with running_server(create_app(services)) as base:
        b = Chromium(width=1200, height=700)
        try:
            b.open(f"{base}/console")
            wait_for(b, "document.readyState === 'complete'")
            b.evaluate("localStorage.clear(); localStorage.setItem('rag-lang', 'en'); location.reload(); true")
            wait_for(b, "document.readyState === 'complete'")
            help_text = wait_for(b, FIRST_RUN)
            assert "rag keys create NAME --write '*'" in help_text and "rag-" in help_text, help_text
            table = wait_for(b, "document.querySelector('#kbs-table tbody')?.innerText")
            assert "No knowledge base yet" not in table and "cannot be listed" in table, table
            screenshot(b, "firstrun-console.png", tmp_path)
        finally:
            b.close()
    services.close()
