"""A loopback HTTP server for the URL-import tests: a few fixed routes (a page, a large file, an
unsupported type, redirects, an error), started in a thread on a random port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = ("<html><head><title>Travel policy</title></head><body><h1>Travel policy</h1>"
        "<p>Employees book trains for trips under four hours. Flights need a manager's approval.</p>"
        "<p>Hotel rooms are booked through the travel desk.</p></body></html>").encode()
ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/policy": (200, {"Content-Type": "text/html; charset=utf-8"}, PAGE),
    "/notes.md": (200, {"Content-Type": "text/plain"}, b"# Notes\n\nThe office closes at six on Fridays.\n"),
    "/big.txt": (200, {"Content-Type": "text/plain"}, b"x" * (1024 * 1024 + 10)),
    "/tool": (200, {"Content-Type": "application/x-msdownload"}, b"MZ\x90\x00"),
    "/to-policy": (302, {"Location": "/policy"}, b""),
    "/to-ftp": (302, {"Location": "ftp://127.0.0.1/file.txt"}, b""),
    "/missing": (404, {"Content-Type": "text/plain"}, b"not here"),
}


SEEN: list[tuple[str, str]] = []  # (Host header, path) of every request served


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        SEEN.append((self.headers.get("Host", ""), self.path))
        status, headers, body = ROUTES.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        """Quiet."""


@contextmanager
def url_server() -> Iterator[str]:
    """The base URL (`http://127.0.0.1:<port>`) of a server answering ROUTES."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
