"""What `/v1/query`, `/v1/chat` and `/v1/chat/completions` share: request options -> pipeline
arguments, the JSON answer, the LLM-down fallback and the Server-Sent Events stream.

SSE format: each pipeline event is sent as `event: <type>` + `data: <the event as JSON>`; the
types are retrieval, token, sources, citations, done, or error (then the stream ends)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import ApiState
from api.errors import error_body
from api.schemas import RetrievalOptions
from rag.db import DB_ERRORS
from rag.errors import LLMError, RagError
from rag.names import HYBRID
from rag.pipeline import Pipeline
from rag.retrieval import filter_pairs, parse_filter
from rag.serialize import answer_to_dict

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def pipeline_kwargs(options: RetrievalOptions | dict[str, Any], history: list[dict[str, str]] | None) -> dict[str, Any]:
    """Keyword arguments for Pipeline.answer/stream (without question and kb)."""
    get = options.get if isinstance(options, dict) else lambda name, default=None: getattr(options, name, default)
    return {"flt": parse_filter(filter_pairs(get("filters"))), "top_k": get("top_k"), "limit": get("limit"),
            "transforms": get("transforms"), "rerank": get("rerank"), "mode": get("mode") or HYBRID,
            "history": history or None, "strategy": get("strategy"),
            "collection_questions": get("collection_questions"), "prefer_latest": get("prefer_latest")}


def answer_payload(data: dict[str, Any], kb: str, include_hits: bool = False) -> dict[str, Any]:
    payload = {k: v for k, v in data.items() if k != "hits"}
    payload["kb"] = kb
    if include_hits:
        payload["hits"] = data.get("hits", [])
    return payload


def answer_json(state: ApiState, pipeline: Pipeline, question: str, kb: str, kwargs: dict[str, Any], *,
                generate: bool = True, retrieval_on_error: bool = False, include_hits: bool = False,
                extra: dict[str, Any] | None = None) -> dict[str, Any] | JSONResponse:
    """The answer as a response dict, or a 503 JSONResponse when the LLM is unreachable (with the
    retrieval results when asked for)."""
    try:
        answer = pipeline.answer(question, kb, generate=generate, **kwargs)
    except LLMError as exc:
        state.metrics.errors.inc(exc.code)
        log.warning("LLM unavailable for a query on %s: %s", kb, exc.message)
        body = error_body(exc.code, exc.message, exc.field)
        if retrieval_on_error:
            fallback = pipeline.answer(question, kb, generate=False, **kwargs)
            body["retrieval"] = answer_payload(answer_to_dict(fallback), kb, include_hits)
        return JSONResponse(body, status_code=exc.http_status)
    state.metrics.observe_stages(answer.timings)
    payload = answer_payload(answer_to_dict(answer), kb, include_hits)
    if generate:
        record_usage(state, kb, payload)
    payload.update(extra or {})
    return payload


def record_usage(state: ApiState, kb: str, answer: dict[str, Any]) -> None:
    """Count a generated answer in the knowledge base's usage (rag/usage.py): a question, a refusal
    or not, the documents its verified citations point to. A failing database costs the count, not
    the answer."""
    if state.usage is None:
        return
    cited = [s["doc_id"] for s in answer.get("sources", []) if s.get("cited")]
    try:
        state.usage.record(kb, refused=bool(answer.get("refused")), cited=cited)
    except DB_ERRORS as exc:
        log.warning("usage of %s not recorded: %s", kb, exc)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_response(chunks: Iterable[str], headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})


def guarded(state: ApiState, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pipeline events, ending in an `error` event instead of a broken connection if the pipeline
    fails unexpectedly once the response has started; counts errors and stage timings."""
    try:
        for event in events:
            if event.get("type") == "error":
                state.metrics.errors.inc(str(event.get("code", "error")))
            elif event.get("type") == "done":
                state.metrics.observe_stages(event.get("timings") or {})
            yield event
    except RagError as exc:
        state.metrics.errors.inc(exc.code)
        yield {"type": "error", "code": exc.code, "message": exc.message}
    except Exception as exc:  # the response has started: report in-band, never drop the connection silently
        log.exception("answer stream crashed")
        state.metrics.errors.inc("internal_error")
        yield {"type": "error", "code": "internal_error", "message": f"internal error: {type(exc).__name__}"}


def sse_events(state: ApiState, events: Iterator[dict[str, Any]], kb: str,
               on_done: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
               first: dict[str, Any] | None = None, generate: bool = True) -> Iterator[str]:
    """The SSE text of a pipeline stream; `on_done(done_event)` may return fields added to `done`."""
    if first is not None:
        yield sse(first["type"], first)
    for event in guarded(state, events):
        if event["type"] == "done":
            if generate:
                record_usage(state, kb, event.get("answer") or {})
            event = {**event, "kb": kb}
            if on_done is not None:
                event.update(on_done(event) or {})
        yield sse(event["type"], event)
