"""Documents at scale, from the API: a page of documents with its total, searched and filtered in
the catalog; a document's chunks paged; tags and titles edited after the upload (and their effect
on tag filters); bulk delete and tag with per-id results; bad input as a 4xx naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rag.types import Chunk
from tests.unit.api_helpers import ADMIN, make_app

BIG = "big"


def _chunks(n_docs: int, per_doc: int = 3) -> list[Chunk]:
    out = []
    for d in range(n_docs):
        tags = {"team": "hr"} if d % 4 == 0 else {"team": "ops"}
        for c in range(per_doc):
            text = f"document {d} part {c} about {'holidays' if d % 4 == 0 else 'servers'} number{d}"
            out.append(Chunk(id=f"c{d:03d}-{c}", kb=BIG, doc_id=f"d{d:03d}", source=f"file-{d:03d}.md", text=text,
                             start=c * 100, end=c * 100 + len(text), title=f"Title {d:03d}", tags=dict(tags)))
    return out


@pytest.fixture
def app_services(tmp_path):
    app, services = make_app(tmp_path)
    chunks = _chunks(30)
    kb = services.kbs.open_or_create(BIG)
    kb.write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))
    return app, services


@pytest.fixture
def client(app_services):
    with TestClient(app_services[0]) as c:
        yield c


def _docs(client, **params):
    r = client.get(f"/v1/kbs/{BIG}/documents", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    return int(r.headers["X-Total-Count"]), r.json()


def test_documents_come_in_pages_with_a_total(client):
    total, everything = _docs(client)  # the unpaged call of existing clients: a list, as before
    assert total == 30 and len(everything) == 30 and everything[0]["source"] == "file-000.md"
    total, page = _docs(client, limit=10, offset=20)
    assert total == 30 and [d["source"] for d in page] == [f"file-{i:03d}.md" for i in range(20, 30)]
    assert page[0]["chunks"] == 3 and page[0]["tags"] == {"team": "hr"} and page[0]["uploaded"] is False
    assert _docs(client, limit=10, offset=40) == (30, [])


def test_documents_are_searched_by_name_title_state_and_tag(client):
    assert [d["source"] for d in _docs(client, q="FILE-01")[1]][:2] == ["file-010.md", "file-011.md"]
    assert _docs(client, q="title 007")[0] == 1
    assert _docs(client, q="nothing like this")[0] == 0
    assert _docs(client, state="indexed")[0] == 30 and _docs(client, state="pending")[0] == 0
    total, hr = _docs(client, tag="team:hr", limit=3)
    assert total == 8 and [d["doc_id"] for d in hr] == ["d000", "d004", "d008"]
    assert _docs(client, **{"tag": ["team=hr", "team=ops"]})[0] == 0
    assert _docs(client, tag="team=hr", q="file-00")[0] == 3  # 000, 004, 008


@pytest.mark.parametrize("params, field", [({"tag": "team"}, "tag"), ({"state": "gone"}, "state"),
                                           ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
                                           ({"q": "x" * 201}, "q")])
def test_bad_document_queries_name_the_field(client, params, field):
    r = client.get(f"/v1/kbs/{BIG}/documents", params=params, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_a_documents_chunks_come_in_pages(client, app_services):
    services = app_services[1]
    chunks = [Chunk(id=f"long-{i:02d}", kb=BIG, doc_id="long", source="long.md", text=f"part {i}", start=i * 10,
                    end=i * 10 + 6) for i in range(12)]
    services.kbs.open(BIG).write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))
    url = f"/v1/kbs/{BIG}/documents/long/chunks"
    whole = client.get(url, headers=ADMIN).json()
    assert whole["total"] == 12 and len(whole["chunks"]) == 12  # no limit: every chunk, as before
    page = client.get(url, params={"limit": 5, "offset": 10}, headers=ADMIN).json()
    assert page["total"] == 12 and page["offset"] == 10 and page["missing"] == 0
    assert [c["chunk_id"] for c in page["chunks"]] == ["long-10", "long-11"]
    assert client.get(url, params={"limit": 0}, headers=ADMIN).json()["error"]["field"] == "limit"


def _query(client, *filters, mode="bm25"):
    body = {"question": "document holidays servers", "kb": BIG, "mode": mode, "top_k": 50, "limit": 50,
            "generate": False, "include_hits": True, "filters": list(filters)}
    r = client.post("/v1/query", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def test_tags_edited_after_upload_reach_the_tag_filters(client):
    assert {h["doc_id"] for h in _query(client, "team=hr")} == {f"d{i:03d}" for i in range(0, 30, 4)}
    r = client.patch(f"/v1/kbs/{BIG}/documents/d001", json={"add_tags": {"lang": "en", "team": "hr"}, "title": "Ops"},
                     headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == {"lang": "en", "team": "hr"} and r.json()["title"] == "Ops"
    for mode in ("bm25", "dense", "hybrid"):
        hits = _query(client, "team=hr", "lang=en", mode=mode)
        assert {h["doc_id"] for h in hits} == {"d001"} and hits[0]["tags"] == {"lang": "en", "team": "hr"}, mode
    assert "d000" in {h["doc_id"] for h in _query(client, "team=hr")}
    client.patch(f"/v1/kbs/{BIG}/documents/d000", json={"remove_tags": ["team"]}, headers=ADMIN)
    assert "d000" not in {h["doc_id"] for h in _query(client, "team=hr")}
    assert _query(client, "team=nobody") == []
    client.patch(f"/v1/kbs/{BIG}/documents/d002", json={"tags": {}}, headers=ADMIN)
    assert _docs(client, q="file-002")[1][0]["tags"] == {}
    assert _docs(client, tag="lang=en")[0] == 1  # the listing's tag filter sees the edit too


@pytest.mark.parametrize("body, field", [({}, "tags"), ({"tags": {"a=b": "c"}}, "tags"),
                                         ({"add_tags": {"team": "a,b"}}, "add_tags"), ({"title": ""}, "title"),
                                         ({"add_tags": {"": "x"}}, "add_tags"), ({"colour": "red"}, "colour")])
def test_bad_edits_name_the_field(client, body, field):
    r = client.patch(f"/v1/kbs/{BIG}/documents/d001", json=body, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_edits_of_unknown_documents_and_while_an_ingest_writes(client, app_services):
    r = client.patch(f"/v1/kbs/{BIG}/documents/nope", json={"title": "x"}, headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["field"] == "doc_id"
    assert client.patch(f"/v1/kbs/nokb/documents/d001", json={"title": "x"}, headers=ADMIN).status_code == 404
    assert client.patch(f"/v1/kbs/{BIG}/documents/d001", json={"title": "x"}).status_code == 401
    import threading
    held, release = threading.Event(), threading.Event()

    def writer():
        with app_services[1].kbs.writing(BIG):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(10)
    try:
        busy = client.patch(f"/v1/kbs/{BIG}/documents/d001", json={"title": "x"}, headers=ADMIN)
        assert busy.status_code == 409 and busy.json()["error"]["field"] == "kb"
    finally:
        release.set()
        thread.join()


def test_bulk_tag_and_delete_report_each_id(client):
    url = f"/v1/kbs/{BIG}/documents/bulk"
    r = client.post(url, json={"action": "tag", "doc_ids": ["d001", "d002", "nope", "d001"], "tags": {"batch": "7"},
                               "remove_tags": ["team"]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["action"], body["done"], body["not_found"]) == ("tag", 2, 1)
    assert [(x["doc_id"], x["status"]) for x in body["results"]] == [("d001", "tagged"), ("d002", "tagged"),
                                                                     ("nope", "not_found")]
    assert body["results"][0]["tags"] == {"batch": "7"}
    assert {h["doc_id"] for h in _query(client, "batch=7")} == {"d001", "d002"}
    r = client.post(url, json={"action": "delete", "doc_ids": ["d001", "d003", "gone"]}, headers=ADMIN)
    body = r.json()
    assert (body["done"], body["not_found"]) == (2, 1) and body["results"][0]["chunks_removed"] == 3
    assert _docs(client)[0] == 28 and {h["doc_id"] for h in _query(client, "batch=7")} == {"d002"}
    assert not {"d001", "d003"} & {h["doc_id"] for h in _query(client)}


@pytest.mark.parametrize("body, field", [({"action": "tag", "doc_ids": ["d001"]}, "tags"),
                                         ({"action": "drop", "doc_ids": ["d001"]}, "action"),
                                         ({"action": "delete", "doc_ids": []}, "doc_ids"),
                                         ({"action": "tag", "doc_ids": ["d001"], "tags": {"k": ""}}, "tags")])
def test_bad_bulk_requests_name_the_field(client, body, field):
    r = client.post(f"/v1/kbs/{BIG}/documents/bulk", json=body, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    assert _docs(client)[0] == 30
