"""Uploaded files: name sanitising, size and type checks, staging on disk, a request body limit and
a cap on the uploads one API key has in progress.

Files are first written to `<data_dir>/uploads/.staging/<job id>/`; the ingest job moves them to
`<data_dir>/uploads/<kb>/<name>` under the knowledge base's write lock. Those files are the source
of truth of an uploaded document: re-uploading a name replaces it (and re-indexes only if its
bytes changed), deleting the document deletes it. A file the job could not index is moved to
`<data_dir>/uploads/<kb>/.retry/<job id>/` for a retry (`retry_dir`)."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Authenticator
from api.errors import PayloadTooLarge, TooManyRequests, error_body
from ingest.parse import SUPPORTED_SUFFIXES
from rag.errors import InvalidRequest, RagError, UnsupportedFile

MIB = 1024 * 1024
MAX_FILES_PER_UPLOAD = 32
JSON_BODY_LIMIT = 8 * MIB
MAX_NAME_BYTES = 200
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"/\\|?*]')
# kept of the invisible format characters (Cf): the joiners, which join letters (Persian, Indic) and emoji
_JOINERS = frozenset("\u200c\u200d")
RETRY_FOLDER = ".retry"  # in a knowledge base's uploads folder (hidden: never a document)
UPLOAD_PATH_RE = re.compile(r"^/v1/kbs/[^/]+/documents/?$")


def uploads_root(data_dir: Path) -> Path:
    return data_dir / "uploads"


def kb_upload_dir(data_dir: Path, kb: str) -> Path:
    return uploads_root(data_dir) / kb


def staging_dir(data_dir: Path, job_id: str) -> Path:
    return uploads_root(data_dir) / ".staging" / job_id


def retry_dir(data_dir: Path, kb: str, job_id: str) -> Path:
    """Where the bytes of a job's failed files are kept for a retry (`POST /v1/jobs/{id}/retry`),
    until retried, the knowledge base is dropped, or RAG_FAILED_UPLOAD_KEEP_HOURS have passed."""
    return kb_upload_dir(data_dir, kb) / RETRY_FOLDER / job_id


def strip_invisible(text: str) -> str:
    """`text` without invisible format characters (Unicode category Cf but the joiners U+200C/U+200D,
    and the line/paragraph separators): the bidirectional controls (U+202A-E, U+2066-9, U+200E/F,
    U+061C) that make `report\u202efdp.exe` show as `reportexe.pdf`, zero-width spaces, BOMs."""
    return "".join(c for c in text if c in _JOINERS or unicodedata.category(c) not in ("Cf", "Zl", "Zp"))


def sanitize_filename(name: str | None) -> str:
    """A safe flat file name from a client-supplied one: the last path component, NFC, invisible
    format characters (bidirectional controls, zero-width spaces) removed, control and reserved
    characters replaced by `_`, no leading dots, at most 200 UTF-8 bytes (suffix kept). Unicode
    letters stay (员工手册.pdf is fine). Raises InvalidRequest when nothing usable is left."""
    raw = strip_invisible(unicodedata.normalize("NFC", name or ""))
    raw = re.split(r"[/\\]", raw)[-1]
    cleaned = _UNSAFE.sub("_", raw).strip().lstrip(".").strip()
    if not cleaned or set(cleaned) <= {"_", " ", "."}:
        raise InvalidRequest(f"unusable file name {name!r}", field="files")
    stem, dot, suffix = cleaned.rpartition(".")
    if not dot:
        stem, suffix = cleaned, ""
    suffix = f".{suffix}" if dot else ""
    while len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    return (stem.rstrip() or "file") + suffix


def check_type(filename: str) -> None:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedFile(f"{filename}: unsupported file type '{suffix or 'no extension'}' "
                              f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})", field="files")


def too_large(filename: str, limit_mb: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{filename} is larger than the upload limit of {limit_mb} MB (RAG_MAX_UPLOAD_MB)",
                           field="files")


def save_stream(source: BinaryIO, target: Path, limit_bytes: int, filename: str, limit_mb: int) -> int:
    """Copy an upload to `target`, refusing (and removing) it past `limit_bytes`. Returns the size."""
    return save_blocks(iter(lambda: source.read(MIB), b""), target, limit_bytes, filename, limit_mb)


def save_blocks(blocks: Iterable[bytes], target: Path, limit_bytes: int, filename: str, limit_mb: int) -> int:
    """Write `blocks` to `target`, refusing (and removing) it past `limit_bytes`; an upload's body or a
    fetched page alike. Returns the size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(target, "wb") as out:
        for block in blocks:
            size += len(block)
            if size > limit_bytes:
                out.close()
                target.unlink(missing_ok=True)
                raise too_large(filename, limit_mb)
            out.write(block)
    return size


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class BodyLimitMiddleware:
    """Refuses request bodies over a per-route limit with 413, before and while they are read (a
    missing or lying Content-Length does not get past it), so an upload cannot fill the disk: the
    spooled part of a refused upload is at most the limit. The connection is closed after the 413."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        refusal = _too_large_message(scope, limit)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_error(send, 413, error_body("payload_too_large", refusal))
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, refusal, headers={"Connection": "close"})
            return message

        await self.app(scope, limited, send)


def _is_upload(scope: Scope) -> bool:
    return scope.get("method") == "POST" and bool(UPLOAD_PATH_RE.match(scope.get("path", "")))


def _too_large_message(scope: Scope, limit: int) -> str:
    size = f"{limit // MIB} MB" if limit >= MIB else f"{limit} bytes"
    return (f"request body larger than the limit of {size} (RAG_MAX_REQUEST_MB, every file of the upload together)"
            if _is_upload(scope) else f"request body larger than the limit of {size}")


async def _send_error(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """A JSON error answered without reading the request body, so the connection is closed after it."""
    data = json.dumps(body).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": data})


def body_limit(max_request_mb: int) -> Callable[[Scope], int]:
    """The body limit of a request: RAG_MAX_REQUEST_MB for an upload, 8 MB for anything else."""
    upload_limit = max_request_mb * MIB

    def limit_for(scope: Scope) -> int:
        return upload_limit if _is_upload(scope) else JSON_BODY_LIMIT

    return limit_for


def bearer_credentials(scope: Scope) -> tuple[str | None, str | None]:
    """(`Authorization: Bearer` credentials, `X-API-Key`) of a request, as `api.deps` reads them."""
    headers = Headers(scope=scope)
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None, headers.get("x-api-key")


class UploadSlotsMiddleware:
    """At most `limit` uploads of one API key in progress at a time (RAG_MAX_CONCURRENT_UPLOADS_PER_KEY,
    per server process): the key is checked from the headers before any of the body is read (401 at
    once for an unknown key), and one more upload of that key is answered 429 without reading it.
    A slot is held until the upload's answer is sent (its files staged, its job queued)."""

    def __init__(self, app: ASGIApp, auth: Authenticator, limit: int) -> None:
        self.app = app
        self.auth = auth
        self.limit = limit
        self.active: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_upload(scope):
            await self.app(scope, receive, send)
            return
        try:
            key = self.auth.authenticate(*bearer_credentials(scope)).key_id
        except RagError as exc:
            await _send_error(send, exc.http_status, error_body(exc.code, exc.message, exc.field),
                              {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None)
            return
        if self.active.get(key, 0) >= self.limit:
            busy = TooManyRequests(f"this API key has {self.limit} uploads in progress, the limit "
                                   f"(RAG_MAX_CONCURRENT_UPLOADS_PER_KEY={self.limit}); retry when one has finished")
            await _send_error(send, busy.http_status, error_body(busy.code, busy.message, busy.field),
                              {"Retry-After": "5"})
            return
        self.active[key] = self.active.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]
