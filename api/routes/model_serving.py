"""The server's own models for other machines: `POST /v1/embeddings` (OpenAI-compatible) and `POST
/v1/rerank` (TEI's shape, or Cohere/Jina's with `documents`), so that one GPU host serves its
embedder and reranker to CPU replicas (`RAG_EMBED_BASE_URL=http://gpu-host:8080/v1`,
`RAG_EMBED_API=rag`, `RAG_RERANK_BASE_URL=http://gpu-host:8080/v1`).

Any valid API key may call them (they read no knowledge base); the request-size limit and the
body deadline of every route apply. They use the server's loaded models with micro-batching, so
concurrent callers share model calls. The routes are plain `def`: FastAPI runs them in its
thread pool."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter

from api.deps import Caller, State
from api.schemas import (EmbeddingOut, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, RerankHit, RerankRequest,
                         RerankResponse, RerankResult)
from rag.errors import InvalidRequest, NotFound
from rag.generation import estimate_tokens

router = APIRouter(prefix="/v1", tags=["models"])
_UNAVAILABLE = {503: {"description": "The model could not be loaded, or its model server is unreachable"}}
_NO_RERANKER = {**_UNAVAILABLE, 404: {"description": "This server has no reranker (RAG_RERANK_MODEL)"}}


def _check_model(given: str | None, loaded: str, kind: str) -> None:
    if given is not None and given.strip() and given.strip() != loaded:
        raise InvalidRequest(f"model {given.strip()!r} is not served here; the {kind} is {loaded!r}", field="model")


@router.post("/embeddings", response_model=EmbeddingResponse, responses=_UNAVAILABLE)
def embeddings(body: EmbeddingRequest, state: State, caller: Caller) -> Any:
    """Embeddings of `input` by the loaded embedding model: L2-normalised float32, in input order."""
    embedder = state.services.embedder
    _check_model(body.model, embedder.name, "embedding model")
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise InvalidRequest(f"dimensions {body.dimensions} is not the model's ({embedder.dim})", field="dimensions")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    encode = embedder.encode_queries if body.input_type == "query" else embedder.encode_corpus
    vectors = np.asarray(encode(texts), dtype=np.float32)
    if body.encoding_format == "base64":
        values: list[Any] = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
    else:
        values = vectors.tolist()
    tokens = sum(estimate_tokens(t) for t in texts)
    return EmbeddingResponse(data=[EmbeddingOut(index=i, embedding=v) for i, v in enumerate(values)],
                             model=embedder.name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


@router.post("/rerank", response_model=list[RerankHit] | RerankResponse, responses=_NO_RERANKER)
def rerank(body: RerankRequest, state: State, caller: Caller) -> Any:
    """Scores in 0..1 of each passage against `query` by the loaded reranker, best first: a list of
    {index, score} for `texts` (TEI), {results: [{index, relevance_score}]} for `documents` (Cohere, Jina)."""
    if (body.texts is None) == (body.documents is None):
        raise InvalidRequest("give the passages as exactly one of `texts` (TEI) or `documents` (Cohere, Jina)",
                             field="texts")
    if body.raw_scores:
        raise InvalidRequest("raw_scores is not supported: scores are 0..1", field="raw_scores")
    reranker = state.services.reranker
    if reranker is None:
        # 404, not 503: asking again will not help, and a client should not retry it
        raise NotFound("no reranker is loaded on this server (RAG_RERANK_MODEL)", field="model")
    _check_model(body.model, reranker.name, "reranker")
    passages = body.texts if body.texts is not None else body.documents
    assert passages is not None
    scores = [float(s) for s in reranker.score(body.query, passages)]
    order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))[: body.top_n or len(passages)]
    if body.texts is not None:
        return [RerankHit(index=i, score=scores[i], text=passages[i] if body.return_text else None) for i in order]
    return RerankResponse(model=reranker.name, results=[
        RerankResult(index=i, relevance_score=scores[i],
                     document={"text": passages[i]} if body.return_documents else None) for i in order])
