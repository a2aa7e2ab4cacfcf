"""Importing a page by URL, from a loopback HTTP server: the page becomes a document (HTML saved as
.html), redirects followed to http(s) only, the upload's size and type limits as the job's file
error, and URLs the server may not fetch (not http(s), credentials, loopback and private addresses
unless allowed) refused with a 422 naming `url`."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from api import url_import
from api.url_import import fetch, file_name
from rag.errors import InvalidRequest
from tests.unit.api.url_server import SEEN, url_server
from tests.unit.api_helpers import ADMIN, make_app, wait_for_job

KB = "web"


@pytest.fixture
def server():
    with url_server() as base:
        yield base


def _client(tmp_path, **settings):
    app, _ = make_app(tmp_path, max_upload_mb=1, max_request_mb=2, **settings)
    return TestClient(app)


@pytest.fixture
def client(tmp_path):
    with _client(tmp_path, url_import_allow_private=True) as c:
        assert c.post("/v1/kbs", json={"name": KB}, headers=ADMIN).status_code == 201
        yield c


def _import(client, url: str, **body) -> dict:
    r = client.post(f"/v1/kbs/{KB}/documents/url", json={"url": url, **body}, headers=ADMIN)
    assert r.status_code == 202, r.text
    return wait_for_job(client, r.json()["job_id"])


def test_a_page_is_imported_as_html_and_answers_a_query(client, server):
    job = _import(client, f"{server}/to-policy", tags={"source": "web"})
    assert job["status"] == "succeeded" and job["kind"] == "url", job
    assert job["files"][0]["filename"] == "policy.html" and job["files"][0]["url"].endswith("/to-policy")
    docs = {d["source"]: d for d in client.get(f"/v1/kbs/{KB}/documents", headers=ADMIN).json()}
    assert docs["policy.html"]["tags"] == {"source": "web"} and docs["policy.html"]["uploaded"] is True
    assert docs["policy.html"]["title"] == "Travel policy"
    hits = client.post("/v1/query", json={"question": "When do employees book trains?", "kb": KB, "generate": False},
                       headers=ADMIN).json()["sources"]
    assert hits and hits[0]["document"] == "policy.html"
    assert _import(client, f"{server}/notes.md")["files"][0]["filename"] == "notes.md"  # text/plain keeps .md


@pytest.mark.parametrize("path, reason", [("/big.txt", "larger than the upload limit of 1 MB"),
                                          ("/tool", "unsupported file type"), ("/missing", "HTTP 404"),
                                          ("/to-ftp", "only http and https")])
def test_fetch_failures_are_the_jobs_file_error(client, server, path, reason):
    job = _import(client, server + path)
    assert job["status"] == "failed" and reason in job["files"][0]["reason"], job
    assert job["errors"] and reason in job["errors"][0]["reason"]
    assert client.get(f"/v1/kbs/{KB}/documents", headers=ADMIN).json() == []


@pytest.mark.parametrize("url, says", [("ftp://example.com/a.txt", "only http and https"),
                                       ("file:///etc/passwd", "only http and https"),
                                       ("http://user:pw@example.com/", "credentials"), ("http:///nohost", "no host"),
                                       ("http://127.0.0.1:9/x", "loopback, private or reserved"),
                                       ("http://10.1.2.3/x", "loopback, private or reserved"),
                                       ("http://[::1]/x", "loopback, private or reserved"),
                                       ("http://169.254.169.254/latest/meta-data", "loopback, private or reserved")])
def test_urls_the_server_may_not_fetch_are_422_naming_url(tmp_path, url, says):
    with _client(tmp_path) as client:  # private addresses refused: the default
        client.post("/v1/kbs", json={"name": KB}, headers=ADMIN)
        r = client.post(f"/v1/kbs/{KB}/documents/url", json={"url": url}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["field"] == "url", r.text
        assert says in r.json()["error"]["message"]


def test_other_bad_requests(client):
    r = client.post(f"/v1/kbs/{KB}/documents/url", json={"url": "http://127.0.0.1/x", "tags": {"a": "b,c"}},
                    headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "tags"
    assert client.post("/v1/kbs/nope/documents/url", json={"url": "http://127.0.0.1/"}, headers=ADMIN).status_code == 404
    assert client.post(f"/v1/kbs/{KB}/documents/url", json={"url": "http://127.0.0.1/"}).status_code == 401


def test_file_names_follow_the_content_type():
    assert file_name("https://x.org/docs/page", "text/html; charset=utf-8") == "page.html"
    assert file_name("https://x.org/", "text/html") == "x.org.html"
    assert file_name("https://x.org/a.htm", "text/html") == "a.htm"
    assert file_name("https://x.org/report.pdf?x=1", "application/pdf") == "report.pdf"
    assert file_name("https://x.org/index.php", "text/html") == "index.php.html"
    assert file_name("https://x.org/data.csv", "application/octet-stream") == "data.csv"
    assert file_name("https://x.org/%E6%89%8B%E5%86%8C", "text/markdown") == "手册.md"


def _resolving(monkeypatch, name: str, *answers: str) -> list[str]:
    """`name` resolves to each of `answers` in turn (the last one from then on); other names as usual.
    The list of what each lookup of `name` returned."""
    real, given = socket.getaddrinfo, []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        given.append(answers[min(len(given), len(answers) - 1)])
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (given[-1], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return given


def test_a_name_rebound_to_a_private_address_after_the_check_is_not_fetched(monkeypatch, tmp_path, server):
    port = urlsplit(server).port
    lookups = _resolving(monkeypatch, "rebind.test", "93.184.216.34", "127.0.0.1")  # public, then loopback
    SEEN.clear()
    url = f"http://rebind.test:{port}/policy"
    assert url_import.check_url(url, allow_private=False) == url  # the name looked public
    with pytest.raises(InvalidRequest, match="loopback, private or reserved") as caught:
        fetch(url, tmp_path, limit_mb=1, timeout=5, allow_private=False)
    assert caught.value.field == "url" and lookups[-1] == "127.0.0.1"
    assert SEEN == []  # the loopback server got no request


def test_a_pinned_fetch_connects_to_the_address_it_checked_with_the_urls_host(monkeypatch, tmp_path, server):
    port = urlsplit(server).port
    monkeypatch.setattr(url_import, "_public", lambda address: address == "127.0.0.1")  # this one counts as public
    lookups = _resolving(monkeypatch, "pinned.test", "127.0.0.1")
    SEEN.clear()
    saved = fetch(f"http://pinned.test:{port}/to-policy", tmp_path, limit_mb=1, timeout=5, allow_private=False)
    assert saved.name == "policy.html" and b"Travel policy" in saved.read_bytes()
    assert SEEN == [(f"pinned.test:{port}", "/to-policy"), (f"pinned.test:{port}", "/policy")]
    assert len(lookups) == 2  # checked as each of the two requests connects
