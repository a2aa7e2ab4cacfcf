"""The routes behind the knowledge-base console: a document's chunks in order, its parsed text
(chunk offsets point into it), the read-only system view with secrets masked, and the console
page itself (served offline, linked with the chat page)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.unit.api_helpers import ADMIN, ADMIN_KEY, make_app, wait_for_job

MANUAL_MD = ("# Zephyr Kettle Manual\n\n## Warranty\n\nThe Zephyr kettle warranty lasts three years from the date of "
             "purchase. It covers the heating element and the lid hinge.\n\n## Cleaning\n\n"
             + "Descale the kettle monthly with citric acid. " * 30 + "\n\n## 保修\n\n本水壶保修三年。\n").encode()
FAQ_CSV = "question,answer\nHow long is the warranty?,Three years.\nCan I descale with vinegar?,Use citric acid.\n"


@pytest.fixture
def client(tmp_path):
    app, _ = make_app(tmp_path, llm_api_key="sk-very-secret", qdrant_api_key="qd-very-secret", chunk_size=200,
                      chunk_overlap=40)
    with TestClient(app) as c:
        c.post("/v1/kbs", json={"name": "kettle"}, headers=ADMIN)
        r = c.post("/v1/kbs/kettle/documents", files=[("files", ("manual.md", MANUAL_MD)),
                                                      ("files", ("faq.csv", FAQ_CSV.encode()))], headers=ADMIN)
        assert r.status_code == 202, r.text
        assert wait_for_job(c, r.json()["job_id"])["status"] == "succeeded"
        yield c


def _doc(client, source):
    docs = client.get("/v1/kbs/kettle/documents", headers=ADMIN).json()
    return next(d for d in docs if d["source"] == source)


def test_chunks_in_order_point_into_the_parsed_text(client):
    doc = _doc(client, "manual.md")
    chunks = client.get(f"/v1/kbs/kettle/documents/{doc['doc_id']}/chunks", headers=ADMIN)
    assert chunks.status_code == 200, chunks.text
    body = chunks.json()
    rows = body["chunks"]
    assert len(rows) == doc["chunks"] >= 3 and body["missing"] == 0
    assert [r["start"] for r in rows] == sorted(r["start"] for r in rows)
    assert rows[0]["section_path"][:1] == ["Zephyr Kettle Manual"] and rows[0]["kind"] == "text"
    text = client.get(f"/v1/kbs/kettle/documents/{doc['doc_id']}/text", headers=ADMIN)
    assert text.status_code == 200, text.text
    parsed = text.json()["text"]
    for row in rows:
        assert parsed[row["start"]:row["end"]] == row["text"]
    assert any("保修三年" in r["text"] for r in rows)


def test_qa_rows_show_their_kind_and_question(client):
    doc = _doc(client, "faq.csv")
    rows = client.get(f"/v1/kbs/kettle/documents/{doc['doc_id']}/chunks", headers=ADMIN).json()["chunks"]
    # a Q&A sheet becomes one chunk per row with the default chunker, matched by its question
    assert [r["kind"] for r in rows] == ["qa", "qa"]
    assert [r["embed_text"] for r in rows] == ["How long is the warranty?", "Can I descale with vinegar?"]
    assert "Three years." in rows[0]["text"]


def test_text_of_a_changed_file_is_a_conflict_and_unknown_ids_404(client, tmp_path):
    doc = _doc(client, "manual.md")
    uploaded = next(tmp_path.rglob("manual.md"))
    uploaded.write_bytes(MANUAL_MD + b"\nmore\n")
    r = client.get(f"/v1/kbs/kettle/documents/{doc['doc_id']}/text", headers=ADMIN)
    assert r.status_code == 409 and "changed since it was indexed" in r.json()["error"]["message"]
    uploaded.unlink()
    assert client.get(f"/v1/kbs/kettle/documents/{doc['doc_id']}/text", headers=ADMIN).status_code == 409
    missing = client.get("/v1/kbs/kettle/documents/nope/chunks", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "doc_id"
    assert client.get("/v1/kbs/nokb/documents/x/chunks", headers=ADMIN).status_code == 404
    assert client.get(f"/v1/kbs/kettle/documents/{doc['doc_id']}/chunks").status_code == 401


def test_system_view_masks_secrets_and_says_reranking_is_off(client):
    r = client.get("/v1/system", headers=ADMIN)
    assert r.status_code == 200, r.text
    text = r.text
    for secret in ("sk-very-secret", "qd-very-secret", ADMIN_KEY):
        assert secret not in text
    body = r.json()
    assert body["settings"]["llm_api_key"] == "***"
    assert body["reranker"]["enabled"] is False and body["reranker"]["reason"]
    assert body["embedder"]["name"] and body["vector_backend"] in ("edge", "local", "server")
    assert body["llm"]["embedded"] is True
    assert client.get("/v1/system").status_code == 401


def test_console_page_is_offline_and_linked_with_the_chat_page(client):
    page = client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    # no external resources: every src/href is local
    assert not re.findall(r'''(?:src|href)\s*=\s*["']https?://''', html)
    script = client.get("/static/console.js").text  # the page's script (no inline script: CSP)
    for call in ("/v1/kbs", "/documents", "/chunks", "/text", "/v1/jobs/", "/v1/query", "/v1/system", "/bulk",
                 "/v1/keys", "X-Total-Count"):
        assert call in script
    assert 'href="/"' in html and "知识库控制台" in script
    assert 'href="/console"' in client.get("/").text
    # every form control has a label
    controls = re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
    labelled = [c for c in controls if "hidden" in c or "aria-label" in c]
    assert len(controls) - len(labelled) == html.count("<label")


def test_the_chat_page_and_the_cli_say_why_an_answer_was_refused(client):
    from pathlib import Path

    from rag.trace import REFUSAL_REASONS

    reasons = set(REFUSAL_REASONS)  # every reason the answering stages give (rag/trace.py)
    assert {"no_hits", "off_topic_answer", "off_topic_sources"} <= reasons
    page = client.get("/static/index.js").text  # the chat page's script
    cli = (Path(__file__).resolve().parents[3] / "cli" / "query_cmds.py").read_text(encoding="utf-8")
    for reason in reasons:
        assert f"{reason}:" in page and f'"{reason}":' in cli, reason
