"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`, so any OpenAI client or chat
UI can talk to a knowledge base: `model` is the knowledge base name ("default"/"rag" = the
configured default); `/v1/models` lists the knowledge bases the key may read.

The last user message is the question, the earlier user/assistant messages are the history
(condensed before retrieval), system messages are ignored (the service has its own prompt).

Citations: an extra top-level field `rag` = {kb, citations, sources, refused, standalone_question,
timings} is on the non-streaming response and on the final streamed chunk (the one with
`finish_reason: "stop"`). With the `openai` client: `completion.rag` / `chunk.rag` (or
`.model_extra["rag"]`). When the streamed text was withdrawn after generation (an answer no source
supports or that misses the question becomes the refusal, or is answered again on other sources),
that final chunk's `rag` also has `replaced: true` and `answer`: the text to show instead. A
failure mid-stream is sent as `data: {"error": {...}}`, which OpenAI clients raise as an APIError."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Caller, PipelineDep, State
from api.querying import answer_json, guarded, pipeline_kwargs, record_usage, sse_response
from api.schemas import ChatCompletionRequest, ModelList, ModelOut, OpenAIMessage
from rag.errors import InvalidRequest
from rag.generation import estimate_tokens
from rag.names import HYBRID, MODES

router = APIRouter(prefix="/v1", tags=["openai"])
DEFAULT_MODELS = ("", "default", "rag")
RAG_OPTIONS = ("filters", "top_k", "limit", "transforms", "rerank", "mode", "strategy",
               "collection_questions", "prefer_latest")


def _text(message: OpenAIMessage) -> str:
    if isinstance(message.content, list):
        return "".join(str(p.get("text", "")) for p in message.content if p.get("type") in ("text", "input_text"))
    return message.content or ""


def _split(messages: list[OpenAIMessage]) -> tuple[str, list[dict[str, str]]]:
    turns = [{"role": m.role, "content": _text(m)} for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise InvalidRequest("the last message must be a non-empty user message (the question)", field="messages")
    return turns[-1]["content"], turns[:-1]


def _options(body: ChatCompletionRequest) -> dict[str, Any]:
    options = dict(body.rag or {})
    unknown = sorted(set(options) - set(RAG_OPTIONS) - {"append_sources"})
    if unknown:
        raise InvalidRequest(f"unknown rag option(s) {unknown}; use {list(RAG_OPTIONS) + ['append_sources']}",
                             field="rag")
    if options.get("mode", HYBRID) not in MODES:
        raise InvalidRequest(f"rag.mode must be one of {list(MODES)}", field="rag.mode")
    for name, kind in (("filters", (dict, list)), ("transforms", list), ("rerank", bool), ("top_k", int),
                       ("limit", int), ("append_sources", bool), ("strategy", str),
                       ("collection_questions", bool), ("prefer_latest", bool)):
        if options.get(name) is not None and not isinstance(options[name], kind):
            raise InvalidRequest(f"rag.{name} has the wrong type", field=f"rag.{name}")
    return options


def _sources_text(sources: list[dict[str, Any]]) -> str:
    lines = []
    for s in sources:
        where = s.get("title") or s.get("document")
        extra = f", p. {s['page']}" if s.get("page") else ""
        lines.append(f"[{s['number']}] {where} ({s.get('document')}{extra})")
    return "\n\nSources:\n" + "\n".join(lines) if lines else ""


def _rag_field(data: dict[str, Any], kb: str) -> dict[str, Any]:
    return {"kb": kb, "citations": data.get("citations", []), "sources": data.get("sources", []),
            "refused": data.get("refused", False), "standalone_question": data.get("standalone_question"),
            "timings": data.get("timings", {})}


def _usage(prompt: str, answer: str) -> dict[str, int]:
    p, c = estimate_tokens(prompt), estimate_tokens(answer)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


@router.post("/chat/completions", responses={503: {"description": "LLM endpoint unreachable"}})
def chat_completions(body: ChatCompletionRequest, state: State, pipeline: PipelineDep, caller: Caller) -> Any:
    """OpenAI chat completions over a knowledge base (stream and non-stream); see the module notes
    for the `rag` extra field with citations and sources."""
    kb = state.settings.default_kb if body.model.strip() in DEFAULT_MODELS else body.model.strip()
    caller.require_read(kb)
    question, history = _split(body.messages)
    options = _options(body)
    kwargs = pipeline_kwargs(options, history)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        events = pipeline.stream(question, kb, **kwargs)
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        chunks = _stream(state, events, kb, completion_id, created, question, include_usage,
                         bool(options.get("append_sources")))
        return sse_response(chunks)
    result = answer_json(state, pipeline, question, kb, kwargs)
    if isinstance(result, JSONResponse):
        return result
    content = result["answer"] + (_sources_text(result["sources"]) if options.get("append_sources") else "")
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": kb,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": _usage(question, content), "rag": _rag_field(result, kb)}


def _stream(state: Any, events: Iterator[dict[str, Any]], kb: str, completion_id: str, created: int, question: str,
            include_usage: bool, append_sources: bool) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": kb,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    streamed: list[str] = []
    for event in guarded(state, events):
        kind = event["type"]
        if kind == "token":
            streamed.append(event["text"])
            yield chunk({"content": event["text"]})
        elif kind == "error":
            error = {"code": event.get("code"), "message": event.get("message"), "type": event.get("code")}
            yield f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n"
            return
        elif kind == "done":
            answer = event["answer"]
            record_usage(state, kb, answer)
            tail = _sources_text(answer.get("sources", [])) if append_sources else ""
            if tail:
                yield chunk({"content": tail})
            rag = _rag_field({**answer, "timings": event.get("timings", {})}, kb)
            if "".join(streamed).strip() != (answer.get("answer") or "").strip():
                # refused after generation, or answered again on other sources: what was streamed is withdrawn
                rag.update(replaced=True, answer=answer.get("answer", ""))
            yield chunk({}, "stop", rag=rag)
            if include_usage:
                data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": kb,
                        "choices": [], "usage": _usage(question, answer.get("answer", "") + tail)}
                yield f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/models", response_model=ModelList)
def list_models(state: State, caller: Caller) -> Any:
    """One model per knowledge base the key may read."""
    records = [r for r in state.services.kbs.list() if caller.can_read(r.name)]
    return ModelList(data=[ModelOut(id=r.name, created=int(r.created_at)) for r in records])
