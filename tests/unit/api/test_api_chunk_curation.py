"""Chunk curation from the API: a chunk's text edited (found by its new words, not its old ones, in
dense, BM25 and hybrid retrieval), a chunk disabled and enabled again, edits kept through a re-ingest
of the unchanged file and kept or dropped (as asked) when the file changed; `check` clean after each
step; a chunk added by hand deleted again (a chunk of the file refused); bad input as a 4xx naming
the field; 409 while the write lock is held; on SQLite and on
PostgreSQL with pgvector."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from tests.unit.api_helpers import ADMIN, make_app, wait_for_job

KB = "curated"
MANUAL = (b"# Zephyr Kettle Manual\n\n"
          b"## Warranty\n\nThe Zephyr kettle warranty lasts three years from the date of purchase and covers "
          b"the heating element.\n\n"
          b"## Cleaning\n\nDescale the kettle monthly with citric acid and rinse it twice before boiling "
          b"water again.\n\n"
          b"## Safety\n\nNever immerse the kettle base in water and keep the cord away from hot surfaces "
          b"at all times.\n")
CHANGED = MANUAL + b"\n## Storage\n\nStore the kettle upside down in a dry cupboard when unused for weeks.\n"
MODES = ("dense", "bm25", "hybrid")


@pytest.fixture
def app_services(tmp_path):
    return make_app(tmp_path, chunk_size=200, chunk_overlap=0, dim=256)  # 256: fewer hash collisions in dense


@pytest.fixture
def client(app_services):
    with TestClient(app_services[0]) as c:
        assert c.post("/v1/kbs", json={"name": KB}, headers=ADMIN).status_code == 201
        assert upload(c, MANUAL)["status"] == "succeeded"
        yield c


def upload(client, data: bytes, **form) -> dict:
    r = client.post(f"/v1/kbs/{KB}/documents", files=[("files", ("kettle.md", data))], data=form, headers=ADMIN)
    assert r.status_code == 202, r.text
    return wait_for_job(client, r.json()["job_id"])


def doc_id(client) -> str:
    return client.get(f"/v1/kbs/{KB}/documents", headers=ADMIN).json()[0]["doc_id"]


def chunks(client) -> list[dict]:
    r = client.get(f"/v1/kbs/{KB}/documents/{doc_id(client)}/chunks", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["chunks"]


def chunk_with(client, word: str) -> dict:
    return next(c for c in chunks(client) if word in c["text"])


def found(client, question: str, mode: str) -> list[dict]:
    r = client.post("/v1/query", json={"kb": KB, "question": question, "generate": False, "mode": mode,
                                       "rerank": False, "limit": 10}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["sources"]


def texts(client, question: str, mode: str) -> str:
    return "\n".join(s["text"] for s in found(client, question, mode))


def ids(client, question: str, mode: str) -> set[str]:
    return {s["chunk_id"] for s in found(client, question, mode)}


def assert_clean(client) -> None:
    r = client.get(f"/v1/kbs/{KB}/check", headers=ADMIN)
    assert r.status_code == 200 and r.json()["ok"], r.json()


def patch(client, chunk_id: str, **body):
    return client.patch(f"/v1/kbs/{KB}/chunks/{chunk_id}", json=body, headers=ADMIN)


EDITED = "Descale the kettle weekly with white vinegar from the zanzibar pantry."


def test_an_edited_chunk_is_found_by_its_new_text_and_not_its_old(client):
    old = chunk_with(client, "citric")
    r = patch(client, old["chunk_id"], text=EDITED)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["chunk_id"] != old["chunk_id"] and new["text"] == EDITED
    assert new["edit"]["edited"] and new["edit"]["original_text"] == old["text"] and not new["disabled"]
    for mode in MODES:
        assert "zanzibar" in texts(client, "zanzibar vinegar pantry", mode), mode
        assert "citric" not in texts(client, "citric acid monthly", mode), mode
        assert old["chunk_id"] not in ids(client, "citric acid monthly descale", mode)
    listed = chunk_with(client, "zanzibar")
    assert listed["chunk_id"] == new["chunk_id"] and listed["edit"]["edited"]
    assert not any("citric" in c["text"] for c in chunks(client))
    assert_clean(client)
    again = patch(client, new["chunk_id"], text=EDITED + " Twice.").json()  # an edited chunk edited again
    assert again["edit"]["original_text"] == old["text"] and again["chunk_id"] != new["chunk_id"]
    back = patch(client, again["chunk_id"], text=old["text"]).json()  # back to its text: no edit left
    assert back["chunk_id"] == old["chunk_id"] and back["edit"] is None
    assert "citric" in texts(client, "citric acid monthly", "bm25")
    assert_clean(client)


def test_a_disabled_chunk_is_never_retrieved_until_enabled(client):
    target = chunk_with(client, "immerse")
    r = patch(client, target["chunk_id"], disabled=True)
    assert r.status_code == 200 and r.json()["disabled"] and r.json()["chunk_id"] == target["chunk_id"], r.text
    for mode in MODES:
        assert target["chunk_id"] not in ids(client, "immerse the kettle base in water cord", mode), mode
    assert chunk_with(client, "immerse")["disabled"]  # still listed, shown disabled
    assert_clean(client)
    assert not patch(client, target["chunk_id"], disabled=False).json()["disabled"]
    for mode in MODES:
        assert target["chunk_id"] in ids(client, "immerse the kettle base in water cord", mode), mode
    assert_clean(client)


def test_edits_survive_a_reingest_of_the_unchanged_file(client):
    edited = patch(client, chunk_with(client, "citric")["chunk_id"], text=EDITED).json()
    disabled = patch(client, chunk_with(client, "immerse")["chunk_id"], disabled=True).json()
    assert upload(client, MANUAL)["files"][0]["status"] == "unchanged"
    job = upload(client, MANUAL, tags="team=home")  # other tags: re-chunked, the edits re-applied
    assert job["files"][0]["status"] == "updated" and job["files"][0]["edits_kept"] == 2, job
    assert chunk_with(client, "zanzibar")["chunk_id"] == edited["chunk_id"]
    assert chunk_with(client, "immerse")["disabled"]
    assert "zanzibar" in texts(client, "zanzibar vinegar", "bm25")
    assert disabled["chunk_id"] not in ids(client, "immerse the kettle base", "hybrid")
    assert_clean(client)


@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_a_changed_file_keeps_or_drops_its_edits(client, mode):
    patch(client, chunk_with(client, "citric")["chunk_id"], text=EDITED)
    target = chunk_with(client, "immerse")["chunk_id"]
    patch(client, target, disabled=True)
    job = upload(client, CHANGED, edits=mode)
    assert job["status"] == "succeeded" and job["edits"] == mode and job["files"][0]["status"] == "updated", job
    result = job["files"][0]
    if mode == "keep":
        assert (result["edits_kept"], result["edits_dropped"]) == (2, 0)
        assert "zanzibar" in texts(client, "zanzibar vinegar", "hybrid")
        assert target not in ids(client, "immerse the kettle base", "hybrid")
    else:
        assert (result["edits_kept"], result["edits_dropped"]) == (0, 2)
        assert "citric" in texts(client, "citric acid monthly", "hybrid")
        assert target in ids(client, "immerse the kettle base", "hybrid")
        assert not any(c["edit"] or c["disabled"] for c in chunks(client))
    assert "cupboard" in texts(client, "upside down cupboard", "bm25")
    assert job["summary"]["edits_kept" if mode == "keep" else "edits_dropped"] == 2
    assert_clean(client)


def test_an_edit_whose_chunk_left_the_file_is_dropped(client):
    patch(client, chunk_with(client, "citric")["chunk_id"], text=EDITED)
    job = upload(client, MANUAL.replace(b"citric acid", b"lemon juice"), edits="keep")
    assert (job["files"][0]["edits_kept"], job["files"][0]["edits_dropped"]) == (0, 1), job
    assert "lemon" in chunk_with(client, "Descale")["text"] and chunk_with(client, "Descale")["edit"] is None
    assert_clean(client)


@pytest.mark.parametrize("body, field", [({}, "text"), ({"text": ""}, "text"), ({"text": "   "}, "text"),
                                         ({"text": "x" * 20_001}, "text"), ({"disabled": "maybe"}, "disabled"),
                                         ({"colour": "red"}, "colour")])
def test_bad_chunk_edits_name_the_field(client, body, field):
    r = patch(client, chunk_with(client, "citric")["chunk_id"], **body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_unknown_chunks_bad_uploads_and_edits_while_an_ingest_writes(client, app_services):
    r = patch(client, "nope", text="x")
    assert r.status_code == 404 and r.json()["error"]["field"] == "chunk_id"
    assert client.patch("/v1/kbs/nokb/chunks/nope", json={"text": "x"}, headers=ADMIN).status_code == 404
    assert client.patch(f"/v1/kbs/{KB}/chunks/nope", json={"text": "x"}).status_code == 401
    r = client.post(f"/v1/kbs/{KB}/documents", files=[("files", ("a.md", b"x"))], data={"edits": "maybe"},
                    headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "edits"
    target = chunk_with(client, "citric")["chunk_id"]
    held, release = threading.Event(), threading.Event()

    def writer():
        with app_services[1].kbs.writing(KB):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(10)
    try:
        busy = patch(client, target, disabled=True)
        assert busy.status_code == 409 and busy.json()["error"]["field"] == "kb"
    finally:
        release.set()
        thread.join()
    assert not chunk_with(client, "citric")["disabled"]


def test_curation_on_postgresql_and_pgvector(tmp_path, pg_url):
    app, services = make_app(tmp_path, catalog_url=pg_url, backend="pgvector", chunk_size=200, chunk_overlap=0,
                           dim=256)
    with TestClient(app) as c:
        assert c.post("/v1/kbs", json={"name": KB}, headers=ADMIN).status_code == 201
        assert upload(c, MANUAL)["status"] == "succeeded"
        old = chunk_with(c, "citric")
        assert patch(c, old["chunk_id"], text=EDITED).status_code == 200
        target = chunk_with(c, "immerse")["chunk_id"]
        assert patch(c, target, disabled=True).status_code == 200
        for mode in MODES:
            assert "zanzibar" in texts(c, "zanzibar vinegar pantry", mode), mode
            assert old["chunk_id"] not in ids(c, "citric acid monthly descale", mode)
            assert target not in ids(c, "immerse the kettle base in water", mode), mode
        qa = c.post(f"/v1/kbs/{KB}/documents/{doc_id(c)}/chunks", json={"question": "Boil milk?", "answer": "No."},
                    headers=ADMIN).json()
        keyed = patch(c, chunk_with(c, "warranty")["chunk_id"], keywords=["flamingo"]).json()
        assert [s["chunk_id"] for s in found(c, "flamingo", "bm25")] == [keyed["chunk_id"]]
        assert qa["chunk_id"] in ids(c, "boil milk", "hybrid")
        assert_clean(c)
        job = upload(c, CHANGED, edits="keep")
        assert job["files"][0]["edits_kept"] == 4, job
        assert [s["chunk_id"] for s in found(c, "flamingo", "bm25")] == [keyed["chunk_id"]]
        assert "zanzibar" in texts(c, "zanzibar vinegar", "bm25")
        assert c.delete(f"/v1/kbs/{KB}/chunks/{qa['chunk_id']}", headers=ADMIN).status_code == 204
        assert qa["chunk_id"] not in ids(c, "boil milk", "hybrid")
        assert_clean(c)
        assert c.delete(f"/v1/kbs/{KB}/documents/{doc_id(c)}", headers=ADMIN).status_code == 200
        assert services.catalog.db.query("SELECT * FROM chunk_edits") == []
    services.close()


def add(client, **body):
    return client.post(f"/v1/kbs/{KB}/documents/{doc_id(client)}/chunks", json=body, headers=ADMIN)


def test_chunks_added_by_hand_are_found_kept_and_deleted_with_their_document(client, app_services):
    r = add(client, text="The kettle ships with a quokka-shaped limescale filter.")
    assert r.status_code == 201, r.text
    text = r.json()
    assert text["edit"]["manual"] and not text["edit"]["edited"] and text["kind"] == "text"
    qa = add(client, question="Can the kettle boil milk?", answer="No: only water, or the element scorches.").json()
    assert qa["kind"] == "qa" and qa["text"].startswith("Q: Can the kettle boil milk?")
    for mode in MODES:
        assert text["chunk_id"] in ids(client, "quokka limescale filter", mode), mode
    assert qa["chunk_id"] in ids(client, "boil milk", "bm25")
    listed = chunks(client)
    assert [c["chunk_id"] for c in listed[-2:]] == [text["chunk_id"], qa["chunk_id"]]  # after the file's chunks
    assert_clean(client)
    # an added chunk is edited and disabled like the others, and stays added
    renamed = patch(client, text["chunk_id"], text="The kettle ships with a wombat-shaped filter.").json()
    assert renamed["edit"]["manual"] and "wombat" in texts(client, "wombat filter", "bm25")
    patch(client, qa["chunk_id"], disabled=True)
    assert qa["chunk_id"] not in ids(client, "boil milk", "bm25")
    job = upload(client, MANUAL, tags="team=home")  # re-chunked: both kept, the Q&A still disabled
    assert job["files"][0]["edits_kept"] == 2, job
    assert renamed["chunk_id"] in ids(client, "wombat filter", "bm25")
    assert qa["chunk_id"] not in ids(client, "boil milk", "hybrid")
    assert upload(client, CHANGED, edits="keep")["files"][0]["edits_kept"] == 2
    assert renamed["chunk_id"] in ids(client, "wombat filter", "hybrid")
    assert_clean(client)
    dropped = upload(client, MANUAL, edits="drop")
    assert dropped["files"][0]["edits_dropped"] == 2 and not any(c["edit"] for c in chunks(client))
    assert "wombat" not in texts(client, "wombat filter", "bm25")
    add(client, text="One more chunk about the teal descaler.")
    the_doc = doc_id(client)
    assert client.delete(f"/v1/kbs/{KB}/documents/{the_doc}", headers=ADMIN).status_code == 200
    assert app_services[1].catalog.chunk_edits(KB, the_doc) == []
    assert_clean(client)


def test_a_chunk_added_by_hand_is_deleted_and_a_chunk_of_the_file_is_not(client, app_services):
    before = len(chunks(client))
    added = add(client, text="The kettle ships with a quokka-shaped limescale filter.").json()
    keyed = patch(client, added["chunk_id"], keywords=["marmot"]).json()
    kept = add(client, question="Can the kettle boil milk?", answer="No, only water.").json()
    r = client.delete(f"/v1/kbs/{KB}/chunks/{keyed['chunk_id']}", headers=ADMIN)
    assert r.status_code == 204, r.text
    for mode in MODES:
        assert keyed["chunk_id"] not in ids(client, "quokka limescale filter marmot", mode), mode
    assert [c["chunk_id"] for c in chunks(client)][before:] == [kept["chunk_id"]]
    assert [e.manual for e in app_services[1].catalog.chunk_edits(KB, doc_id(client))] == [True]  # the Q&A's
    assert_clean(client)
    assert upload(client, CHANGED, edits="keep")["files"][0]["edits_kept"] == 1  # it does not come back
    assert "quokka" not in texts(client, "quokka limescale filter", "bm25")
    again = client.delete(f"/v1/kbs/{KB}/chunks/{keyed['chunk_id']}", headers=ADMIN)
    assert again.status_code == 404 and again.json()["error"]["field"] == "chunk_id"
    own = chunk_with(client, "citric")["chunk_id"]
    refused = client.delete(f"/v1/kbs/{KB}/chunks/{own}", headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "chunk_id", refused.text
    assert "disable" in refused.json()["error"]["message"] and own in ids(client, "citric acid", "bm25")
    assert_clean(client)


@pytest.mark.parametrize("body, field", [({}, "text"), ({"text": "a", "question": "b"}, "text"),
                                         ({"question": "Why?"}, "answer"), ({"answer": "Because."}, "question"),
                                         ({"question": " ", "answer": "x"}, "question"), ({"text": ""}, "text"),
                                         ({"text": "a", "page": 3}, "page")])
def test_bad_added_chunks_name_the_field(client, body, field):
    r = add(client, **body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_a_chunk_added_to_an_unknown_document_is_404(client):
    r = client.post(f"/v1/kbs/{KB}/documents/nope/chunks", json={"text": "x"}, headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["field"] == "doc_id"


def test_keywords_and_questions_are_matched_by_bm25_and_dense(client):
    target = chunk_with(client, "immerse")
    assert target["chunk_id"] not in ids(client, "flamingo", "bm25")
    r = patch(client, target["chunk_id"], keywords=["flamingo", " pelican  bay "],
              questions=["Is the kettle dishwasher safe?"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["edit"]["keywords"] == ["flamingo", "pelican bay"] and body["edit"]["questions"][0].startswith("Is")
    assert body["text"] == target["text"] and not body["edit"]["edited"]  # the text shown stays the chunk's
    for mode in MODES:
        hits = found(client, "flamingo dishwasher", mode)
        assert hits and hits[0]["chunk_id"] == body["chunk_id"], (mode, hits)
    assert [s["chunk_id"] for s in found(client, "pelican", "bm25")] == [body["chunk_id"]]
    assert chunk_with(client, "immerse")["edit"]["keywords"] == ["flamingo", "pelican bay"]
    assert_clean(client)
    job = upload(client, CHANGED, edits="keep")  # re-applied with the rest
    assert job["files"][0]["edits_kept"] == 1
    assert [s["chunk_id"] for s in found(client, "pelican", "bm25")] == [body["chunk_id"]]
    cleared = patch(client, body["chunk_id"], keywords=[], questions=[]).json()
    assert cleared["edit"] is None and cleared["chunk_id"] == target["chunk_id"]
    assert found(client, "pelican", "bm25") == []
    assert_clean(client)


def test_an_added_qa_pair_takes_keywords_too(client):
    qa = add(client, question="Can the kettle boil milk?", answer="No, only water.").json()
    tagged = patch(client, qa["chunk_id"], keywords=["lactose"]).json()
    assert tagged["edit"]["manual"] and tagged["edit"]["keywords"] == ["lactose"] and tagged["kind"] == "qa"
    assert [s["chunk_id"] for s in found(client, "lactose", "bm25")] == [tagged["chunk_id"]]
    assert_clean(client)


@pytest.mark.parametrize("body, field", [({"keywords": [""]}, "keywords"), ({"keywords": ["x" * 301]}, "keywords"),
                                         ({"questions": ["q"] * 33}, "questions"), ({"keywords": "flamingo"}, "keywords"),
                                         ({"questions": [" "]}, "questions")])
def test_bad_keywords_and_questions_name_the_field(client, body, field):
    r = patch(client, chunk_with(client, "citric")["chunk_id"], **body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
