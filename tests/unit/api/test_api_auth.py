"""API keys: the auth matrix (no key 401, unknown key 401, outside its knowledge bases 403), both
header styles, hashed storage, revocation, admin-only key management, and switching
authentication off (loudly) or running without an admin key."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import ApiKeyStore, hash_key
from tests.unit.api_helpers import ADMIN, make_app, make_services
from tests.unit.kb_fixtures import KB

QUERY = {"question": "warranty?", "kb": KB, "generate": False}


@pytest.fixture
def setup(tmp_path):
    app, services = make_app(tmp_path)
    with TestClient(app) as client:
        client.post("/v1/kbs", json={"name": "other"}, headers=ADMIN)

        def key(read=(), write=()):
            r = client.post("/v1/keys", json={"name": "k", "read": list(read), "write": list(write)}, headers=ADMIN)
            assert r.status_code == 201, r.text
            return r.json()

        yield client, services, key


def test_requests_without_a_valid_key_are_401(setup):
    client, _, _ = setup
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic abc"}):
        r = client.post("/v1/query", json=QUERY, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/v1/kbs").status_code == 401
    assert client.get("/v1/models").status_code == 401


@pytest.mark.parametrize("route", ["/healthz", "/readyz", "/", "/openapi.json"])
def test_probes_page_and_schema_need_no_key(setup, route):
    client, _, _ = setup
    assert client.get(route).status_code == 200


def test_read_only_key_matrix(setup):
    client, _, key = setup
    reader = {"X-API-Key": key(read=[KB])["key"]}
    assert client.post("/v1/query", json=QUERY, headers=reader).status_code == 200
    assert client.post("/v1/query", json={**QUERY, "kb": "other"}, headers=reader).status_code == 403
    forbidden = client.post("/v1/query", json={**QUERY, "kb": "missing"}, headers=reader)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["field"] == "kb"  # 403 before existence
    assert client.post(f"/v1/kbs/{KB}/documents", files=[("files", ("a.txt", b"x"))], headers=reader).status_code == 403
    assert client.post("/v1/kbs", json={"name": "new"}, headers=reader).status_code == 403
    assert client.delete(f"/v1/kbs/{KB}", headers=reader).status_code == 403
    assert client.delete(f"/v1/kbs/{KB}/documents/x", headers=reader).status_code == 403
    assert [k["name"] for k in client.get("/v1/kbs", headers=reader).json()] == [KB]
    assert [m["id"] for m in client.get("/v1/models", headers=reader).json()["data"]] == [KB]
    assert client.get(f"/v1/kbs/{KB}/documents", headers=reader).status_code == 200
    assert client.get("/v1/kbs/other/documents", headers=reader).status_code == 403
    completion = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=completion, headers=reader).status_code == 403
    assert client.post("/v1/chat", json={"message": "hi", "kb": "other"}, headers=reader).status_code == 403
    assert client.get("/v1/keys", headers=reader).status_code == 403
    assert client.post("/v1/keys", json={"name": "x", "read": ["*"]}, headers=reader).status_code == 403


def test_writer_key_may_upload_and_read_its_kb_only(setup):
    client, _, key = setup
    writer = {"Authorization": f"Bearer {key(write=['other'])['key']}"}
    r = client.post("/v1/kbs/other/documents", files=[("files", ("a.txt", b"hello world"))], headers=writer)
    assert r.status_code == 202
    assert client.get(f"/v1/jobs/{r.json()['job_id']}", headers=writer).status_code == 200
    assert client.post("/v1/query", json={**QUERY, "kb": "other"}, headers=writer).status_code in (200, 404)
    assert client.post("/v1/query", json=QUERY, headers=writer).status_code == 403
    reader = {"X-API-Key": key(read=[KB])["key"]}
    assert client.get(f"/v1/jobs/{r.json()['job_id']}", headers=reader).status_code == 403
    assert client.post("/v1/kbs", json={"name": "other2"}, headers=writer).status_code == 403
    wildcard = {"X-API-Key": key(write=["*"])["key"]}
    assert client.post("/v1/kbs", json={"name": "other2"}, headers=wildcard).status_code == 201


def test_keys_are_stored_hashed_listed_and_revocable(setup):
    client, services, key = setup
    created = key(read=["*"])
    secret = created["key"]
    assert secret.startswith("rag-") and created["prefix"] == secret[:10]
    raw = sqlite3.connect(services.data_dir / "api_keys.sqlite").execute("SELECT hash FROM api_keys").fetchall()
    assert (hash_key(secret),) in raw and all(secret not in row[0] for row in raw)
    listed = client.get("/v1/keys", headers=ADMIN).json()
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0] and "hash" not in listed[0]
    assert client.get(f"/v1/keys/{created['id']}", headers=ADMIN).json()["read"] == ["*"]
    assert client.post("/v1/query", json=QUERY, headers={"X-API-Key": secret}).status_code == 200
    assert client.delete(f"/v1/keys/{created['id']}", headers=ADMIN).status_code == 204
    assert client.post("/v1/query", json=QUERY, headers={"X-API-Key": secret}).status_code == 401
    assert client.delete(f"/v1/keys/{created['id']}", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("body,field", [({"name": "x"}, "read"), ({"name": "x", "read": ["bad name"]}, "read"),
                                        ({"name": "", "read": ["*"]}, "name")])
def test_bad_key_requests(setup, body, field):
    client, _, _ = setup
    r = client.post("/v1/keys", json=body, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == field


def test_auth_disabled_is_explicit_and_loud(tmp_path, caplog):
    services = make_services(tmp_path, api_admin_key=None, auth_disabled=True)
    with caplog.at_level(logging.WARNING, logger="api.app"):
        app = create_app(services)
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    with TestClient(app) as client:
        assert client.post("/v1/query", json=QUERY).status_code == 200
        assert client.post("/v1/kbs", json={"name": "free"}).status_code == 201
        assert client.get("/readyz").json()["auth"] == "disabled"


def test_without_admin_key_only_stored_keys_work(tmp_path, caplog):
    services = make_services(tmp_path, api_admin_key=None)
    store = ApiKeyStore(services.data_dir / "api_keys.sqlite")
    secret = store.create("cli-made", read=[KB]).secret
    store.close()
    with caplog.at_level(logging.WARNING, logger="api.app"):
        app = create_app(services)
    assert "no admin key" in caplog.text and "rag keys create" in caplog.text
    with TestClient(app) as client:
        assert client.post("/v1/query", json=QUERY).status_code == 401
        assert client.post("/v1/query", json=QUERY, headers={"X-API-Key": secret}).status_code == 200
        assert client.post("/v1/keys", json={"name": "x", "read": ["*"]},
                           headers={"X-API-Key": secret}).status_code == 403
        assert client.get("/v1/keys", headers={"Authorization": "Bearer "}).status_code == 401
