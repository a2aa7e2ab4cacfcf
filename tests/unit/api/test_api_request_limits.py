"""Request limits against a real uvicorn server on 127.0.0.1, over raw sockets: a stalled body gets
408 and its connection closed (RAG_REQUEST_BODY_TIMEOUT), one API key has at most
RAG_MAX_CONCURRENT_UPLOADS_PER_KEY uploads in progress (429), an unknown key's upload is refused
before its body is read (401), and a streamed upload over RAG_MAX_REQUEST_MB is cut off with 413
while it streams. Every loop is bounded; nothing leaves the loopback interface."""

from __future__ import annotations

import json
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.unit.api_helpers import ADMIN, ADMIN_KEY, make_app, running_server

BOUNDARY = "xx"
PART_HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="slow.txt"\r\n'
             "Content-Type: text/plain\r\n\r\n").encode()
PART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def _open(base: str, path: str, key: str, content_type: str, length: int | None, first: bytes) -> socket.socket:
    """A connection that sent a request's headers and `first` bytes of its body."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=5)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
                  f"Content-Type: {content_type}\r\n{framing}\r\n\r\n").encode() + first)
    return sock


def _answer(sock: socket.socket, timeout: float, until_closed: bool = True) -> tuple[int, dict, bool, float]:
    """(status, JSON body, whether the server closed the connection, seconds waited) of the answer
    read within `timeout` seconds (and, `until_closed`, of the close after it); status 0 when none came."""
    started = time.monotonic()
    data, closed = b"", False
    while time.monotonic() - started < timeout and not (not until_closed and _complete(data)):
        sock.settimeout(max(timeout - (time.monotonic() - started), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    waited = time.monotonic() - started
    if not data:
        return 0, {}, closed, waited
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else {}, closed, waited


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(sep) and bool(lengths) and len(body) >= lengths[0]


def _slow_upload(base: str, key: str = ADMIN_KEY) -> socket.socket:
    """An upload that announced 20,000 bytes and sent half of them."""
    return _open(base, "/v1/kbs/handbook/documents", key, f"multipart/form-data; boundary={BOUNDARY}", 20_000,
                 PART_HEAD + b"x" * 10_000)


@pytest.mark.parametrize("kind", ["json", "upload"])
def test_a_stalled_body_gets_408_and_the_connection_closed(tmp_path, kind):
    app, _ = make_app(tmp_path, request_body_timeout=1.0)
    with running_server(app) as base:
        sock = (_slow_upload(base) if kind == "upload" else
                _open(base, "/v1/query", ADMIN_KEY, "application/json", 1000, b'{"question": "war'))
        with sock:
            status, body, closed, waited = _answer(sock, timeout=6)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert "RAG_REQUEST_BODY_TIMEOUT" in body["error"]["message"]
    assert closed and 0.8 < waited < 5


def test_a_slow_body_that_arrives_in_time_is_served(tmp_path):
    app, _ = make_app(tmp_path, request_body_timeout=3.0)
    body = PART_HEAD + b"The kettle warranty lasts three years. " * 20 + PART_TAIL
    with running_server(app) as base:
        with _open(base, "/v1/kbs/handbook/documents", ADMIN_KEY, f"multipart/form-data; boundary={BOUNDARY}",
                   len(body), body[: len(body) // 2]) as sock:
            time.sleep(0.5)
            sock.sendall(body[len(body) // 2:])
            status, answer, _, _ = _answer(sock, timeout=10, until_closed=False)
    assert status == 202 and answer["files"] == [{"filename": "slow.txt", "size": 780}]


def _in_flight(base: str) -> float:
    text = httpx.get(f"{base}/metrics", headers=ADMIN, timeout=5).text
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("rag_http_requests_in_flight"))


def test_uploads_in_progress_per_key_are_capped(tmp_path):
    app, _ = make_app(tmp_path, request_body_timeout=3.0, max_concurrent_uploads_per_key=2)
    with running_server(app) as base:
        other = httpx.post(f"{base}/v1/keys", json={"name": "other", "write": ["handbook"]}, headers=ADMIN,
                           timeout=5).json()["key"]
        slow = [_slow_upload(base), _slow_upload(base)]
        deadline = time.monotonic() + 5
        while _in_flight(base) < 3 and time.monotonic() < deadline:  # both uploads (and this /metrics) served
            time.sleep(0.05)
        third = _slow_upload(base)
        status, body, closed, waited = _answer(third, timeout=3)
        assert status == 429 and body["error"]["code"] == "too_many_requests" and closed and waited < 2
        assert "RAG_MAX_CONCURRENT_UPLOADS_PER_KEY=2" in body["error"]["message"]
        files = {"files": ("kettle.txt", b"The kettle warranty lasts three years.")}
        # another key is not held up by this one's uploads
        assert httpx.post(f"{base}/v1/kbs/handbook/documents", files=files, timeout=10,
                          headers={"Authorization": f"Bearer {other}"}).status_code == 202
        for sock in slow:  # the stalled uploads time out and give their slots back
            assert _answer(sock, timeout=6)[0] == 408
            sock.close()
        third.close()
        again = httpx.post(f"{base}/v1/kbs/handbook/documents", files=files, headers=ADMIN, timeout=10)
        assert again.status_code == 202, again.text


def test_an_unknown_key_is_refused_before_the_upload_body_is_read(tmp_path):
    app, _ = make_app(tmp_path, request_body_timeout=30.0)
    with running_server(app) as base:
        with _open(base, "/v1/kbs/handbook/documents", "rag-unknown", f"multipart/form-data; boundary={BOUNDARY}",
                   50_000_000, b"") as sock:
            status, body, closed, waited = _answer(sock, timeout=5)
    assert status == 401 and body["error"]["code"] == "unauthorized" and closed and waited < 3


def test_a_streamed_upload_over_the_request_limit_is_cut_off_while_it_streams(tmp_path):
    app, services = make_app(tmp_path, max_upload_mb=1, max_request_mb=2)
    total, sent, block = 64 * 1024 * 1024, 0, 64 * 1024
    with running_server(app) as base:
        with _open(base, "/v1/kbs/handbook/documents", ADMIN_KEY, f"multipart/form-data; boundary={BOUNDARY}",
                   None, b"") as sock:  # chunked: no Content-Length to refuse it by
            chunk = b"%x\r\n" % block + b"y" * block + b"\r\n"
            sock.sendall(b"%x\r\n" % len(PART_HEAD) + PART_HEAD + b"\r\n")
            while sent < total and not select.select([sock], [], [], 0)[0]:
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += block
            status, body, closed, _ = _answer(sock, timeout=5)
    assert status == 413 and "RAG_MAX_REQUEST_MB" in body["error"]["message"] and closed
    assert sent < 16 * 1024 * 1024  # cut off near the 2 MB limit (plus socket buffers), not after the 64 MB
    staging = services.data_dir / "uploads" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
