"""Uploaded files: name sanitising, size and type checks, staging on disk, and a request body limit.

Files are first written to `<data_dir>/uploads/.staging/<job id>/`; the ingest job moves them to
`<data_dir>/uploads/<kb>/<name>` under the knowledge base's write lock. Those files are the source
of truth of an uploaded document: re-uploading a name replaces it (and re-indexes only if its
bytes changed), deleting the document deletes it."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import PayloadTooLarge, error_body
from ingest.parse import SUPPORTED_SUFFIXES
from rag.errors import InvalidRequest, UnsupportedFile

MIB = 1024 * 1024
MAX_FILES_PER_UPLOAD = 32
JSON_BODY_LIMIT = 8 * MIB
MAX_NAME_BYTES = 200
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
UPLOAD_PATH_RE = re.compile(r"^/v1/kbs/[^/]+/documents/?$")


def uploads_root(data_dir: Path) -> Path:
    return data_dir / "uploads"


def kb_upload_dir(data_dir: Path, kb: str) -> Path:
    return uploads_root(data_dir) / kb


def staging_dir(data_dir: Path, job_id: str) -> Path:
    return uploads_root(data_dir) / ".staging" / job_id


def sanitize_filename(name: str | None) -> str:
    """A safe flat file name from a client-supplied one: the last path component, NFC, no control or
    reserved characters, no leading dots, at most 200 UTF-8 bytes (suffix kept). Unicode letters stay
    (员工手册.pdf is fine). Raises InvalidRequest when nothing usable is left."""
    raw = unicodedata.normalize("NFC", name or "")
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
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(target, "wb") as out:
        while block := source.read(MIB):
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
    missing or lying Content-Length does not get past it), so an upload cannot fill the disk."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_413(send, limit)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body larger than {limit // MIB} MB")
            return message

        await self.app(scope, limited, send)


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(error_body("payload_too_large", f"request body larger than {limit // MIB} MB")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def body_limit(max_upload_mb: int) -> Callable[[Scope], int]:
    upload_limit = max_upload_mb * MIB * MAX_FILES_PER_UPLOAD + MIB

    def limit_for(scope: Scope) -> int:
        if scope.get("method") == "POST" and UPLOAD_PATH_RE.match(scope.get("path", "")):
            return upload_limit
        return JSON_BODY_LIMIT

    return limit_for
