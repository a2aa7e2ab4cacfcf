"""`POST /v1/query`, `POST /v1/chat` and the conversation history routes.

The endpoints are plain `def`: FastAPI runs them in its thread pool, so the blocking pipeline
calls never stall the event loop; streamed answers iterate their sync generator there too."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from api.conversations import new_conversation_id
from api.deps import Caller, PipelineDep, State
from api.querying import answer_json, pipeline_kwargs, sse_events, sse_response
from api.schemas import ChatRequest, ChatResponse, ConversationOut, MessageOut, QueryRequest, QueryResponse

router = APIRouter(prefix="/v1", tags=["query"])
HISTORY_TURNS = 20  # messages of a conversation given to the pipeline (it condenses the last few)
_SSE_DOC = {200: {"content": {"application/json": {}, "text/event-stream": {
    "schema": {"type": "string", "description": "Server-Sent Events when `stream` is true"}}}},
    503: {"description": "LLM endpoint unreachable (error body; `retrieval` when requested)"}}


@router.post("/query", response_model=QueryResponse, responses=_SSE_DOC)
def query(body: QueryRequest, state: State, pipeline: PipelineDep, caller: Caller) -> Any:
    """Answer a question from a knowledge base with numbered, verified citations. With
    `stream: true` the answer comes as Server-Sent Events: `retrieval`, `token`*, `sources`,
    `citations`, `done` (the whole answer), or `error`."""
    kb = body.kb or state.settings.default_kb
    caller.require_read(kb)
    history = [t.model_dump() for t in body.history] if body.history else None
    kwargs = pipeline_kwargs(body, history)
    if body.stream:
        events = pipeline.stream(body.question, kb, generate=body.generate, **kwargs)
        return sse_response(sse_events(state, events, kb, generate=body.generate))
    return answer_json(state, pipeline, body.question, kb, kwargs, generate=body.generate,
                       retrieval_on_error=body.retrieval_on_error, include_hits=body.include_hits)


def _turn_meta(data: dict[str, Any], kb: str) -> dict[str, Any]:
    keep = ("number", "chunk_id", "doc_id", "document", "title", "section", "page", "start", "end", "snippet")
    return {"kb": kb, "refused": data.get("refused", False), "standalone_question": data.get("standalone_question"),
            "citations": data.get("citations", []),
            "sources": [{k: s.get(k) for k in keep} for s in data.get("sources", [])]}


@router.post("/chat", response_model=ChatResponse, responses=_SSE_DOC)
def chat(body: ChatRequest, state: State, pipeline: PipelineDep, caller: Caller, response: Response) -> Any:
    """One turn of a multi-turn chat. The history is kept on the server under `conversation_id`;
    follow-ups are condensed into a standalone question before retrieval. The turn is stored
    once the answer is complete. Streaming adds a first `conversation` event."""
    kb = body.kb or state.settings.default_kb
    caller.require_read(kb)
    store = state.conversations
    conversation_id = body.conversation_id or new_conversation_id()
    history = store.history(conversation_id, caller.key_id, caller.admin, last=HISTORY_TURNS)
    kwargs = pipeline_kwargs(body, history)

    def save(data: dict[str, Any]) -> None:
        if body.generate:
            store.add_turn(conversation_id, caller.key_id, kb, body.message, data["answer"], _turn_meta(data, kb))

    headers = {"X-Conversation-Id": conversation_id}
    if body.stream:
        events = pipeline.stream(body.message, kb, generate=body.generate, **kwargs)

        def on_done(event: dict[str, Any]) -> dict[str, Any]:
            save(event["answer"])
            return {"conversation_id": conversation_id}

        first = {"type": "conversation", "conversation_id": conversation_id, "kb": kb}
        return sse_response(sse_events(state, events, kb, on_done, first, generate=body.generate), headers)
    result = answer_json(state, pipeline, body.message, kb, kwargs, generate=body.generate,
                         retrieval_on_error=body.retrieval_on_error, include_hits=body.include_hits,
                         extra={"conversation_id": conversation_id})
    if isinstance(result, dict):
        save(result)
    response.headers.update(headers)
    return result


def _message(m: Any) -> MessageOut:
    meta = m.meta or {}
    return MessageOut(role=m.role, content=m.content, created_at=m.created_at, kb=meta.get("kb"),
                      citations=meta.get("citations") if m.role == "assistant" else None,
                      sources=meta.get("sources") if m.role == "assistant" else None,
                      refused=meta.get("refused") if m.role == "assistant" else None)


@router.get("/conversations", response_model=list[ConversationOut], tags=["conversations"])
def list_conversations(state: State, caller: Caller, limit: int = Query(50, ge=1, le=500),
                       offset: int = Query(0, ge=0, le=10_000_000)) -> Any:
    """The caller's conversations, most recent first (all of them for the admin)."""
    rows = state.conversations.list(caller.key_id, caller.admin, limit, offset)
    return [ConversationOut(id=c.id, kb=c.kb, title=c.title, created_at=c.created_at, updated_at=c.updated_at)
            for c in rows]


@router.get("/conversations/{conversation_id}", response_model=ConversationOut, tags=["conversations"])
def get_conversation(conversation_id: str, state: State, caller: Caller) -> Any:
    conv = state.conversations.get(conversation_id, caller.key_id, caller.admin)
    return ConversationOut(id=conv.id, kb=conv.kb, title=conv.title, created_at=conv.created_at,
                           updated_at=conv.updated_at, messages=[_message(m) for m in conv.messages])


@router.delete("/conversations/{conversation_id}", status_code=204, tags=["conversations"])
def delete_conversation(conversation_id: str, state: State, caller: Caller) -> Response:
    state.conversations.delete(conversation_id, caller.key_id, caller.admin)
    return Response(status_code=204)

