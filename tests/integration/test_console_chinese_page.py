"""The console in Chinese, in headless Chromium (issue 37): every string the pages use (the English
table and each `data-i18n` label) has a Chinese one, the labels are switched when the language is,
and the new actions read in Chinese: the documents tab with its settings, a document's chunks (a
chunk added by hand with its Delete button), the keys tab and the usage tab. Screenshots go to the
test's tmp folder (or RAG_SCREENSHOT_DIR) and, for a person to look at, to /tmp/console-shots-zh/.
Install `fonts-noto-cjk` so the Chinese text renders."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from api.app import create_app
from ingest.service import build_ingestor
from tests.integration.test_chat_page import CHROMIUM
from tests.integration.test_console_manage_page import LIB, _open
from tests.integration.test_console_page import screenshot, wait_for
from tests.unit.api_helpers import ADMIN_KEY, make_services, running_server

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]

SHOTS = Path("/tmp/console-shots-zh")
_shot = partial(screenshot, keep=SHOTS)
POLICY = ("# 员工休假制度\n\n## 年假\n\n员工每年享有十五天带薪年假。年假需要提前两周向直属经理申请。\n\n"
          "## 病假\n\n病假超过三天需要提供医院证明。\n")
UNTRANSLATED = ("JSON.stringify([...new Set([...Object.keys(EN), "
                "...[...document.querySelectorAll('[data-i18n]')].map(e => e.dataset.i18n), "
                "...[...document.querySelectorAll('[data-i18n-placeholder]')].map(e => e.dataset.i18nPlaceholder)])]"
                ".filter(k => !I18N.zh[k]))")
STILL_ENGLISH = ("JSON.stringify([...document.querySelectorAll('[data-i18n]')]"
                 ".filter(e => e.textContent === e.dataset.en && I18N.zh[e.dataset.i18n] !== e.dataset.en)"
                 ".map(e => e.dataset.i18n))")


def _tab(b, name: str) -> str:
    b.evaluate(f"document.getElementById('tab-{name}').click(); true")
    wait_for(b, f"document.getElementById('panel-{name}').classList.contains('active')")
    return b.evaluate(f"document.getElementById('panel-{name}').innerText")


def test_the_console_reads_in_chinese(tmp_path):
    services = make_services(tmp_path, chunk_size=60, chunk_overlap=0)
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "休假制度.md").write_text(POLICY, encoding="utf-8")
    with services.kbs.writing(LIB):
        build_ingestor(services, LIB).ingest_files(folder, [folder / "休假制度.md"])
    doc = services.catalog.find_doc_by_source(LIB, "休假制度.md")
    with running_server(create_app(services)) as base:
        b = _open(base, ADMIN_KEY, height=1100)
        try:
            assert b.evaluate(UNTRANSLATED) == "[]"
            b.evaluate("document.getElementById('lang').value = 'zh';"
                       "document.getElementById('lang').dispatchEvent(new Event('change')); true")
            wait_for(b, "document.documentElement.lang === 'zh-CN'")
            assert b.evaluate(STILL_ENGLISH) == "[]"
            docs = _tab(b, "docs")
            assert "入库设置" in docs and "分块方式" in docs, docs
            wait_for(b, "!!document.querySelector('#docs-table button[aria-label=\"打开 休假制度.md\"]')")
            b.evaluate("document.querySelector('#docs-table button[aria-label=\"打开 休假制度.md\"]').click(); true")
            wait_for(b, "document.querySelectorAll('#chunk-list .chunk').length >= 2")
            b.evaluate("document.getElementById('add-text').value = '婚假为十天，需提供结婚证。';"
                       "document.getElementById('add-chunk').requestSubmit(); true")
            wait_for(b, "document.getElementById('status').textContent === '分块已添加'")
            manual = wait_for(b, "[...document.querySelectorAll('#chunk-list .chunk')]"
                                 ".find(c => c.innerText.includes('婚假'))?.innerText")
            assert "手动添加" in manual and "编辑" in manual and "停用" in manual and "删除" in manual, manual
            assert "文本" in manual and "已索引" in b.evaluate("document.getElementById('docs-table').innerText")
            _shot(b, "zh-documents.png", tmp_path, "#doc-view")
            assert len(services.catalog.get_doc(LIB, doc.doc_id).chunk_ids) == len(doc.chunk_ids) + 1
            keys = _tab(b, "keys")
            assert "API 密钥" in keys and "或 *" in b.evaluate("document.getElementById('new-key-read').placeholder")
            _shot(b, "zh-keys.png", tmp_path)
            usage = _tab(b, "usage")
            assert "使用情况" in usage and "近 30 天" in usage, usage
            _shot(b, "zh-usage.png", tmp_path)
        finally:
            b.close()
    services.close()
