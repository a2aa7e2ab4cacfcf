"""ASGI middleware of the app beyond uploads (api/uploads.py) and metrics (api/metrics.py): a
deadline on reading request bodies, and the Content-Security-Policy of the pages."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# the chat page and the console load their script and style sheet from /static and talk to the API
# only; no inline script or style attribute anywhere, so none is allowed
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PAGE_PATHS = ("/", "/console")
STATIC_PREFIX = "/static/"


class BodyTimeoutMiddleware:
    """A request body must arrive within `seconds` of the app's first read of it (RAG_REQUEST_BODY_TIMEOUT);
    past that the request is answered 408 (JSON, `request_timeout`) and the connection closed. Without
    it, a client that sends the headers and part of a body holds its connection and a server task
    for ever: uvicorn's keep-alive timeout covers idle connections only, not a stalled body. Reads
    after the last body message (the wait for a disconnect while a response streams) are not timed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        complete = False

        async def timed() -> Message:
            nonlocal deadline, complete
            if complete:
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.seconds
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.seconds:g} s "
                                         "(RAG_REQUEST_BODY_TIMEOUT)", headers={"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed, send)


class PageSecurityMiddleware:
    """Adds the Content-Security-Policy (and `X-Content-Type-Options: nosniff`) to the pages (`/`,
    `/console`) and the files under /static/. The OpenAPI pages (/docs, /redoc) load their scripts
    from a CDN and are left as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path in PAGE_PATHS or path.startswith(STATIC_PREFIX)):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> Any:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                                                  (b"x-content-type-options", b"nosniff")]}
            await send(message)

        await self.app(scope, receive, with_headers)
