"""Chunk curation in the console, in headless Chromium (issue 37): a chunk's text and keywords edited
in place (markup typed into it shown as text, an empty text named by the server), the edit found by
the page's retrieval test and the old text not; a chunk disabled (shown struck through) and gone from
the retrieval test; a Q&A pair added to the document and deleted again; a changed file uploaded with "drop the edits"
chosen in the upload card loses them. Screenshots go to the test's tmp folder (or
RAG_SCREENSHOT_DIR) and, for a person to look at, to /tmp/console-shots-curation/."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from api.app import create_app
from ingest.service import build_ingestor
from tests.integration.test_chat_page import CHROMIUM
from tests.integration.test_console_manage_page import LIB, _open
from tests.integration.test_console_page import screenshot, wait_for
from tests.unit.api.test_api_chunk_curation import MANUAL
from tests.unit.api_helpers import ADMIN_KEY, make_services, running_server

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]

SHOTS = Path("/tmp/console-shots-curation")
CHUNK = "[...document.querySelectorAll('#chunk-list .chunk')].find(c => c.querySelector('.text, form').textContent.includes({0!r}))"
HITS = "[...document.querySelectorAll('#test-hits .hit')].map(h => h.querySelector('.text').textContent).join('\\n')"


_shot = partial(screenshot, keep=SHOTS)


def _chunk_button(b, word: str, label: str) -> None:
    b.evaluate(f"[...({CHUNK.format(word)}).querySelectorAll('.chunk-actions button')]"
               f".find(x => x.textContent === {label!r}).click(); true")


def _retrieve(b, question: str, mode: str) -> str:
    b.evaluate("document.getElementById('tab-test').click(); document.getElementById('test-hits').innerHTML = '';"
               f"document.getElementById('test-q').value = {question!r}; document.getElementById('test-mode').value = {mode!r};"
               "document.getElementById('test-form').requestSubmit(); true")
    wait_for(b, "document.querySelectorAll('#test-hits .hit, #test-hits p').length > 0")
    return b.evaluate(HITS)


def test_chunks_edited_disabled_and_added_in_the_console(tmp_path):
    services = make_services(tmp_path, chunk_size=200, chunk_overlap=0)
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "kettle.md").write_bytes(MANUAL)
    with services.kbs.writing(LIB):
        build_ingestor(services, LIB).ingest_files(folder, [folder / "kettle.md"])
    with running_server(create_app(services)) as base:
        b = _open(base, ADMIN_KEY, height=1100)
        try:
            b.evaluate("document.getElementById('tab-docs').click(); true")
            wait_for(b, "!!document.querySelector('#docs-table button[aria-label=\"Open kettle.md\"]')")
            b.evaluate("document.querySelector('#docs-table button[aria-label=\"Open kettle.md\"]').click(); true")
            wait_for(b, "document.querySelectorAll('#chunk-list .chunk').length >= 3 && "
                        "document.getElementById('doc-text').textContent.length > 0")
            # an empty text: the server names the field, shown in the chunk
            _chunk_button(b, "citric", "Edit")
            wait_for(b, "!!document.querySelector('.chunk-editor textarea')")
            b.evaluate("document.querySelector('.chunk-editor textarea').value = '';"
                       "document.querySelector('.chunk-editor').requestSubmit(); true")
            error = wait_for(b, "document.querySelector('.chunk-editor .error').textContent")
            assert "(text)" in error, error
            _shot(b, "curation-edit-error.png", tmp_path)
            # the text and keywords edited in place; markup typed into the text stays text
            b.evaluate("document.querySelector('.chunk-editor textarea').value = "
                       "'Descale the kettle weekly with <b>zanzibar</b> vinegar.';"
                       "document.querySelector('.chunk-editor input[name=keywords]').value = 'limescale, flamingo';"
                       "document.querySelector('.chunk-editor').requestSubmit(); true")
            wait_for(b, f"(c => !!c && !!c.querySelector('.pill.edited'))({CHUNK.format('zanzibar')})")
            edited = b.evaluate(f"({CHUNK.format('zanzibar')}).innerHTML")
            assert "&lt;b&gt;zanzibar&lt;/b&gt;" in edited and "<b>" not in edited
            assert "Keywords: limescale, flamingo" in b.evaluate(f"({CHUNK.format('zanzibar')}).innerText")
            assert "Original: " in b.evaluate(f"({CHUNK.format('zanzibar')}).innerText")
            # a chunk disabled: still listed, shown disabled
            _chunk_button(b, "immerse", "Disable")
            wait_for(b, f"(c => c && c.classList.contains('disabled'))({CHUNK.format('immerse')})")
            # a Q&A pair added by hand
            b.evaluate("document.querySelector('input[name=add-kind][value=qa]').click();"
                       "document.getElementById('add-question').value = 'Can the kettle boil milk?';"
                       "document.getElementById('add-answer').value = 'No: only water.';"
                       "document.getElementById('add-chunk').requestSubmit(); true")
            wait_for(b, f"(c => c && c.innerText.includes('added by hand'))({CHUNK.format('boil milk')})")
            b.evaluate(f"({CHUNK.format('immerse')}).scrollIntoView({{block: 'center'}}); true")
            _shot(b, "curation-chunks.png", tmp_path)
            # the retrieval test finds the edit, not the old text, and not the disabled chunk
            hits = _retrieve(b, "zanzibar vinegar descale", "hybrid")
            assert "zanzibar" in hits and "citric" not in hits, hits
            _shot(b, "curation-retrieval-edit.png", tmp_path)
            assert "citric" not in _retrieve(b, "citric acid monthly", "bm25")
            assert "<b>zanzibar</b>" in _retrieve(b, "flamingo", "bm25")  # by its keyword
            assert "immerse" not in _retrieve(b, "immerse the kettle base in water", "hybrid")
            _shot(b, "curation-retrieval-disabled.png", tmp_path)
            assert "boil milk" in _retrieve(b, "boil milk", "bm25")
            # enabled again from the page: found again
            b.evaluate("document.getElementById('tab-docs').click(); true")
            _chunk_button(b, "immerse", "Enable")
            wait_for(b, f"(c => c && !c.classList.contains('disabled'))({CHUNK.format('immerse')})")
            assert "immerse" in _retrieve(b, "immerse the kettle base in water", "hybrid")
            # the Q&A pair deleted from the page (a chunk of the file has no Delete button): gone from retrieval
            b.evaluate("document.getElementById('tab-docs').click(); window.confirm = () => true; true")
            assert b.evaluate(f"[...({CHUNK.format('immerse')}).querySelectorAll('button')]"
                              ".every(x => x.textContent !== 'Delete')")
            _chunk_button(b, "boil milk", "Delete")
            wait_for(b, f"!({CHUNK.format('boil milk')}) && /chunk deleted/.test(document.body.innerText)")
            assert "boil milk" not in _retrieve(b, "boil milk", "bm25")
            # a changed file uploaded with "drop the edits" chosen in the upload card: the edits go
            b.evaluate("document.getElementById('tab-docs').click(); document.getElementById('upload-edits').value = 'drop';"
                       f"upload([new File([{(MANUAL.decode() + ' A new closing line.')!r}], 'kettle.md')]); true")
            wait_for(b, "/finished|完成/.test(document.getElementById('job-status').textContent)", timeout=60)
            doc = services.catalog.find_doc_by_source(LIB, "kettle.md")
            assert services.catalog.chunk_edits(LIB, doc.doc_id) == []
            assert "zanzibar" not in _retrieve(b, "zanzibar vinegar descale", "hybrid")
        finally:
            b.close()
    assert services.kbs.check(LIB).ok
    services.close()
