"""Retrieval for the LangChain and LlamaIndex retrievers: one request shape, two backends.

`HttpBackend` posts to `/v1/query` of a running `rag serve` with `generate: false` and
`include_hits: true` (nothing is generated; the ranked chunks come back with their provenance);
`LocalBackend` calls `Pipeline.retrieve` in this process. Both return the same hit dicts
(`rag.generation.hit_to_dict`: chunk_id, doc_id, document, title, section_path, page, start,
end, kind, tags, text, score, rerank_score, provenance) and raise the same exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from rag.errors import ConfigError, InvalidRequest, NotFound, RagError


class RagClientError(Exception):
    """A retrieval request failed; `status` is the HTTP status (or its equivalent in-process)."""

    status = 0

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else type(self).status
        self.code = code
        self.field = field


class AuthenticationError(RagClientError):
    """401: no API key, or one the server does not know."""

    status = 401


class PermissionDeniedError(RagClientError):
    """403: the key may not read this knowledge base."""

    status = 403


class NotFoundError(RagClientError):
    """404: unknown knowledge base."""

    status = 404


class InvalidRequestError(RagClientError):
    """4xx: a malformed request (empty question, bad filter, bad mode...)."""

    status = 422


class ServiceError(RagClientError):
    """5xx or an unreachable server."""

    status = 503


_BY_STATUS: dict[int, type[RagClientError]] = {401: AuthenticationError, 403: PermissionDeniedError,
                                               404: NotFoundError, 400: InvalidRequestError,
                                               409: InvalidRequestError, 413: InvalidRequestError,
                                               422: InvalidRequestError}


@dataclass(frozen=True)
class RetrievalRequest:
    """What to retrieve: the knowledge base (None: the server's default), a metadata filter as the
    API takes it (`{"source": "a.pdf", "team": "hr", "mtime_from": "2024-01-01"}` or
    `["team=hr"]`), the mode, candidates per list (`top_k`), hits returned (`limit`) and
    whether to rerank (None: the server's default)."""

    kb: str | None = None
    filters: Mapping[str, Any] | list[str] | None = None
    mode: str = "hybrid"
    top_k: int | None = None
    limit: int | None = None
    rerank: bool | None = None

    def body(self, question: str) -> dict[str, Any]:
        body: dict[str, Any] = {"question": question, "mode": self.mode, "generate": False, "include_hits": True}
        for name in ("kb", "top_k", "limit", "rerank"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        if self.filters:
            body["filters"] = list(self.filters) if isinstance(self.filters, list) else dict(self.filters)
        return body


def error_from_response(response: httpx.Response) -> RagClientError:
    """The exception for an error response of our API (`{"error": {code, message, field}}`)."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = error.get("message") or f"HTTP {response.status_code}"
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServiceError if response.status_code >= 500 else InvalidRequestError
    return kind(f"{message} (HTTP {response.status_code})", status=response.status_code, code=error.get("code"),
                field=error.get("field"))


@dataclass
class HttpBackend:
    """A running `rag serve`: `base_url` like `http://127.0.0.1:8000`, `api_key` sent as a
    bearer token. `client` / `async_client` may be given (an `httpx.Client`, Starlette's
    `TestClient`, an `httpx.AsyncClient` over an ASGI transport); otherwise they are made here."""

    base_url: str
    api_key: str | None = None
    timeout: float = 60.0
    client: httpx.Client | None = field(default=None, repr=False)
    async_client: httpx.AsyncClient | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")

    def __repr__(self) -> str:  # never show the key
        return f"HttpBackend(base_url={self.base_url!r}, api_key={'***' if self.api_key else None})"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _url(self) -> str:
        return self.base_url.rstrip("/") + "/v1/query"

    def retrieve(self, question: str, request: RetrievalRequest) -> list[dict[str, Any]]:
        if self.client is None:
            self.client = httpx.Client(timeout=self.timeout)
        try:
            response = self.client.post(self._url(), json=request.body(question), headers=self._headers())
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.base_url}: {type(exc).__name__}") from exc
        return _hits(response)

    async def aretrieve(self, question: str, request: RetrievalRequest) -> list[dict[str, Any]]:
        try:
            if self.async_client is not None:
                response = await self.async_client.post(self._url(), json=request.body(question),
                                                        headers=self._headers())
            else:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.post(self._url(), json=request.body(question), headers=self._headers())
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.base_url}: {type(exc).__name__}") from exc
        return _hits(response)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _hits(response: httpx.Response) -> list[dict[str, Any]]:
    if response.status_code >= 400:
        raise error_from_response(response)
    return list(response.json().get("hits") or [])


@dataclass
class LocalBackend:
    """The pipeline of this process (`services.pipeline`, from `rag.factory`)."""

    pipeline: Any

    def retrieve(self, question: str, request: RetrievalRequest) -> list[dict[str, Any]]:
        from rag.serialize import hit_to_dict
        from rag.retrieval import filter_pairs, parse_filter

        kb = request.kb or self.pipeline.config.default_kb
        try:
            flt = parse_filter(filter_pairs(request.filters))
            result = self.pipeline.retrieve(question, kb, flt=flt, top_k=request.top_k, limit=request.limit,
                                            rerank=request.rerank, mode=request.mode)
        except NotFound as exc:
            raise NotFoundError(exc.message, code=exc.code, field=exc.field) from exc
        except (InvalidRequest, ConfigError) as exc:
            raise InvalidRequestError(exc.message, code=exc.code, field=exc.field) from exc
        except RagError as exc:
            raise ServiceError(exc.message, status=exc.http_status, code=exc.code, field=exc.field) from exc
        return [hit_to_dict(h) for h in result.hits]

    async def aretrieve(self, question: str, request: RetrievalRequest) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.retrieve, question, request)


def hit_metadata(hit: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata both frameworks carry for a hit: everything but the text, plus `section`."""
    meta = {k: v for k, v in hit.items() if k != "text"}
    meta["section"] = " > ".join(hit.get("section_path") or [])
    meta["source"] = hit.get("document")
    return meta


def make_backend(*, base_url: str | None, api_key: str | None, pipeline: Any, timeout: float = 60.0,
                 client: Any = None, async_client: Any = None):
    """Exactly one of `base_url` (REST) or `pipeline` (in-process)."""
    if (base_url is None) == (pipeline is None):
        raise ValueError("give exactly one of base_url (a running rag serve) or pipeline (in-process)")
    if pipeline is not None:
        return LocalBackend(pipeline)
    return HttpBackend(base_url, api_key, timeout, client, async_client)
