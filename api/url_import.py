"""Importing one page or file by URL (`POST /v1/kbs/{kb}/documents/url`): the server fetches it (httpx)
into the job's staging folder, and the job ingests it like an uploaded file. No crawler: one URL,
its redirects followed (at most 5, each to http or https again and checked again).

The same limits as an upload: RAG_MAX_UPLOAD_MB (refused while it streams, or at once from
Content-Length), the upload's allowed types by extension; the extension comes from the Content-Type
(`text/html` is saved as `.html`), else from the URL's path. Server-side request forgery: only
http and https, no credentials in the URL, and every address the host resolves to must be public
(not loopback, private, link-local, shared, reserved or multicast) unless
RAG_URL_IMPORT_ALLOW_PRIVATE=true; the check runs when the import is asked for (422 naming `url`)
and again for each connection of the fetch (a redirect's too), which goes to the very addresses
that were checked (`_PublicOnly`): a name that resolves to a public address for the check
and to a private one a moment later (DNS rebinding) cannot slip through, and TLS still verifies the
certificate against the URL's host name. The whole fetch is bounded by RAG_URL_IMPORT_TIMEOUT seconds
per request."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpcore
import httpx

from api.uploads import MIB, check_type, sanitize_filename, save_blocks, too_large
from ingest.parse import SUPPORTED_SUFFIXES
from rag.errors import InvalidRequest, RagError

MAX_REDIRECTS = 5
MAX_URL_CHARS = 2000
USER_AGENT = "rag-url-import/1 (one page, no crawling)"
CONTENT_TYPES = {
    "text/html": ".html", "application/xhtml+xml": ".html", "text/plain": ".txt", "text/markdown": ".md",
    "text/x-markdown": ".md", "text/csv": ".csv", "text/tab-separated-values": ".tsv", "application/json": ".json",
    "application/x-ndjson": ".jsonl", "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "image/png": ".png", "image/jpeg": ".jpg", "image/tiff": ".tiff", "image/bmp": ".bmp", "image/webp": ".webp"}
_SAME = {".htm": ".html", ".jpeg": ".jpg", ".markdown": ".md", ".tif": ".tiff", ".ndjson": ".jsonl"}


class FetchFailed(RagError):
    """The page could not be fetched (unreachable, timed out, an HTTP error, too many redirects)."""

    code = "fetch_failed"
    http_status = 502


def check_url(url: str, allow_private: bool) -> str:
    """`url` if the server may fetch it, else InvalidRequest naming `url` (see the module docstring)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"not a usable URL: {exc}", field="url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidRequest(f"only http and https URLs can be imported, not {parts.scheme or 'no scheme'!r}",
                             field="url")
    if not parts.hostname:
        raise InvalidRequest("the URL has no host", field="url")
    if parts.username or parts.password:
        raise InvalidRequest("a URL with credentials (user:password@) is not imported", field="url")
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(f"the URL is longer than {MAX_URL_CHARS} characters", field="url")
    if not allow_private:
        public_addresses(parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80))
    return url


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, when every one is public; else InvalidRequest naming `url`."""
    addresses = _addresses(host, port)
    for address in addresses:
        if not _public(address):
            raise InvalidRequest(f"{host} is a loopback, private or reserved address ({address}): "
                                 "refused (RAG_URL_IMPORT_ALLOW_PRIVATE=true allows it)", field="url")
    return addresses


def _addresses(host: str, port: int) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest(f"cannot resolve the host {host!r}: {exc}", field="url") from None


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PublicOnly(httpcore.SyncBackend):
    """Opens a connection only to the public addresses its host resolves to, resolved and checked
    here, once (`public_addresses`), so nothing can resolve the name again in between; TLS is
    started on the connection with the URL's host name (httpcore passes the origin's, not the
    address), so certificates are verified as usual."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        failed: httpcore.ConnectError | None = None
        for address in public_addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # the next address, as a resolver's client would
                failed = exc
        raise failed or httpcore.ConnectError(f"no address for {host}")


def _transport(allow_private: bool) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    if not allow_private:  # the same pool, on the backend that checks what it connects to
        if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):  # an httpx of another make
            raise RuntimeError("httpx.HTTPTransport keeps no httpcore pool: URL import cannot pin addresses")
        transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False),
                                                  network_backend=_PublicOnly())
    return transport


def file_name(url: str, content_type: str | None) -> str:
    """The name the fetched file is saved under: the URL path's last part (or the host), with the
    extension of its Content-Type when that says another type (`page` + text/html -> `page.html`)."""
    parts = urlsplit(url)
    base = unquote(parts.path).rstrip("/").rsplit("/", 1)[-1] or parts.hostname or "page"
    try:
        name = sanitize_filename(base)
    except InvalidRequest:
        name = "page"
    suffix = Path(name).suffix.lower()
    ext = CONTENT_TYPES.get((content_type or "").split(";", 1)[0].strip().lower())
    if ext is None or (suffix in SUPPORTED_SUFFIXES and (_SAME.get(suffix, suffix) == ext or ext == ".txt")):
        return name
    stem = name[: -len(suffix)] if suffix in SUPPORTED_SUFFIXES else name
    return f"{stem}{ext}"


def fetch(url: str, folder: Path, *, limit_mb: int, timeout: float, allow_private: bool) -> Path:
    """Fetch `url` into `folder` (named by `file_name`); the path. Raises InvalidRequest (a redirect
    to a refused URL), UnsupportedFile (a type an upload may not have), PayloadTooLarge, FetchFailed."""
    limit = limit_mb * MIB
    current = url
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, transport=_transport(allow_private),
                          headers={"User-Agent": USER_AGENT}) as client:
            for _ in range(MAX_REDIRECTS + 1):
                check_url(current, allow_private=True)  # its addresses: checked as it connects (`_PublicOnly`)
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    if response.status_code >= 400:
                        raise FetchFailed(f"{current} answered HTTP {response.status_code}")
                    return _save(response, current, folder, limit, limit_mb)
    except httpx.HTTPError as exc:
        raise FetchFailed(f"could not fetch {current}: {type(exc).__name__}: {exc or 'no detail'}") from None
    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects from {url}")


def _save(response: httpx.Response, url: str, folder: Path, limit: int, limit_mb: int) -> Path:
    name = file_name(url, response.headers.get("content-type"))
    check_type(name)
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(name, limit_mb)
    target = folder / name
    save_blocks(response.iter_bytes(MIB), target, limit, name, limit_mb)
    return target
