"""`GET /v1/kbs/{kb}/check` and `POST /v1/kbs/{kb}/repair` (issue 31 item 9): what `rag check`
says, from the server that holds the store; admin or a key that may write the knowledge base;
orphans of other knowledge bases only for keys that may write those; 409 while a job writes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.api_helpers import ADMIN, make_app
from tests.unit.kb_fixtures import KB
from tests.unit.rag.test_kb_locks import held_by_another_thread


@pytest.fixture
def setup(tmp_path):
    app, services = make_app(tmp_path)
    with TestClient(app) as client:
        def key(read=(), write=()):
            r = client.post("/v1/keys", json={"name": "k", "read": list(read), "write": list(write)}, headers=ADMIN)
            assert r.status_code == 201, r.text
            return {"Authorization": f"Bearer {r.json()['key']}"}

        yield client, services, key


def test_check_needs_the_admin_or_a_write_key(setup):
    client, _, key = setup
    for headers in (ADMIN, key(write=[KB])):
        r = client.get(f"/v1/kbs/{KB}/check", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] and (body["catalog"], body["vectors"], body["lexical"]) == (7, 7, 7)
    assert client.get(f"/v1/kbs/{KB}/check", headers=key(read=[KB])).status_code == 403
    assert client.post(f"/v1/kbs/{KB}/repair", headers=key(read=["*"])).status_code == 403
    r = client.get(f"/v1/kbs/{KB}/check")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.post(f"/v1/kbs/{KB}/repair").status_code == 401
    assert client.get("/v1/kbs/ghost/check", headers=ADMIN).status_code == 404


def test_repair_removes_what_check_finds_within_the_keys_reach(setup):
    client, services, key = setup
    kb = services.kbs.open(KB)
    kb.lexical.delete(["vpn"])
    for orphan in (f"{KB}__v2", "secret__v2"):
        services.store.ensure_collection(orphan, 64)
    writer = key(write=[KB])
    found = client.get(f"/v1/kbs/{KB}/check", headers=writer).json()
    assert not found["ok"] and found["missing_in_lexical"] == ["vpn"]
    assert found["orphan_collections"] == [f"{KB}__v2"]  # not the other knowledge base's
    assert client.get(f"/v1/kbs/{KB}/check", headers=ADMIN).json()["orphan_collections"] == [f"{KB}__v2", "secret__v2"]
    with held_by_another_thread(services.kbs, KB):  # an ingest job writes it
        busy = client.post(f"/v1/kbs/{KB}/repair", headers=writer)
    assert busy.status_code == 409 and "being written" in busy.json()["error"]["message"]
    r = client.post(f"/v1/kbs/{KB}/repair", headers=writer)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["changed"] and done["lexical_restored"] == 1 and done["orphans_dropped"] == [f"{KB}__v2"]
    assert done["after"]["ok"] and services.store.collections() == [KB, "secret__v2"]


def test_delete_and_the_kb_list_finish_an_interrupted_drop(setup):
    client, services, _ = setup
    services.catalog.mark_dropping(KB)  # a drop killed right after its first step
    assert client.get(f"/v1/kbs/{KB}", headers=ADMIN).status_code == 404
    assert client.delete(f"/v1/kbs/{KB}", headers=ADMIN).status_code == 204
    assert services.store.collections() == [] and services.catalog.get_dropping(KB) is None
    assert client.post("/v1/kbs", json={"name": "again"}, headers=ADMIN).status_code == 201
    services.catalog.mark_dropping("again")
    assert client.get("/v1/kbs", headers=ADMIN).json() == []  # hidden, and finished
    assert services.store.collections() == [] and services.catalog.get_dropping("again") is None
