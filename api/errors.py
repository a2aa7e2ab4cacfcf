"""Errors at the HTTP edge. Every error body is `{"error": {"code", "message", "field"}}`:
a `RagError` keeps its own `code` and `http_status`; request validation is 422 naming the
first bad field (all of them under `error.details`); Starlette's HTTP errors (404 unknown
route, 405, 408 from the body timeout, 413 from the body limit, ...) get a code derived from the status.
An error with a `retry_after` (ModelUnavailable: a model server is down) also sends `Retry-After`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.db import DB_UNAVAILABLE
from rag.errors import RagError

log = logging.getLogger(__name__)

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
                 500: "internal_error", 503: "unavailable"}


class Unauthorized(RagError):
    """No API key, or one the server does not know."""

    code = "unauthorized"
    http_status = 401


class Forbidden(RagError):
    """A valid key used outside the knowledge bases (or the admin routes) it may use."""

    code = "forbidden"
    http_status = 403


class Conflict(RagError):
    """The resource exists already, or is busy (a knowledge base being written)."""

    code = "conflict"
    http_status = 409


class PayloadTooLarge(RagError):
    code = "payload_too_large"
    http_status = 413


class TooManyRequests(RagError):
    """A key already has as many requests of a kind in progress as it may (uploads)."""

    code = "too_many_requests"
    http_status = 429


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "field": field}}
    body["error"].update(extra)
    return body


def count_error(request: Request, code: str) -> None:
    """Add one to `rag_errors_total{code}` when the app has metrics."""
    state = getattr(request.app.state, "api", None)
    if state is not None:
        state.metrics.errors.inc(code)


def error_response(exc: RagError, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    content = error_body(exc.code, exc.message, exc.field)
    content.update(extra)
    return JSONResponse(content, status_code=exc.http_status, headers=headers)


def validation_field(loc: tuple | list) -> str | None:
    """`("body", "filters", 0)` -> "filters.0"; the leading body/query/path/header part is dropped."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie", "form"):
        parts = parts[1:]
    return ".".join(parts) or None


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


async def _rag_error(request: Request, exc: RagError) -> JSONResponse:
    if exc.http_status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, exc.http_status, exc.code, exc.message)
    count_error(request, exc.code)
    return error_response(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    details = [{"field": validation_field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
               for e in errors]
    first = details[0] if details else {"field": None, "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    body = error_body("validation_error", message, first["field"], details=_json_safe(details))
    count_error(request, "validation_error")
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    count_error(request, code)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # the catalog's PostgreSQL is away or dropped the connection: the same request may work in a moment
    log.warning("%s %s -> 503: the database is unavailable: %s", request.method, request.url.path,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    count_error(request, "database_unavailable")
    return JSONResponse(error_body("database_unavailable", "the catalog database is unavailable (restarting or "
                                   "unreachable); retry in a moment"), status_code=503, headers={"Retry-After": "2"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # the one place a crash becomes a response: log it with its traceback, answer a plain 500
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    count_error(request, "internal_error")
    return JSONResponse(error_body("internal_error", f"internal error: {type(exc).__name__}"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RagError, _rag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in DB_UNAVAILABLE:
        app.add_exception_handler(kind, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
