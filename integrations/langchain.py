"""LangChain: our knowledge bases as a `BaseRetriever`, and the citations of our chat endpoint as
Documents.

    from integrations.langchain import RagRetriever
    retriever = RagRetriever(base_url="http://127.0.0.1:8000", api_key="...", kb="handbook", top_k=30)
    docs = retriever.invoke("How long is the warranty?")          # or await retriever.ainvoke(...)

Each Document's `page_content` is the chunk text; `metadata` holds source (the document path),
title, section_path, section, page, start/end (character span in the parsed document), chunk_id,
doc_id, kind, tags, score (the fused score), rerank_score and provenance (list, variant, rank,
score per ranked list). Give `pipeline=services.pipeline` instead of `base_url` to query in
this process. Needs `pip install "rag-service[langchain]"`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError('the LangChain retriever needs langchain-core: pip install "rag-service[langchain]"',
                              name=exc.name) from exc
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from integrations.backends import RetrievalRequest, hit_metadata, make_backend

__all__ = ["RagRetriever", "documents_from_rag"]


class RagRetriever(BaseRetriever):
    """Retrieval from one knowledge base: hybrid (dense + BM25 fused), dense or bm25, optionally
    reranked; nothing is generated."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str | None = None
    api_key: SecretStr | None = None
    pipeline: Any = Field(default=None, exclude=True)
    kb: str | None = None
    filters: dict[str, Any] | list[str] | None = None
    mode: str = "hybrid"
    top_k: int | None = None
    limit: int | None = None
    rerank: bool | None = None
    timeout: float = 60.0
    client: Any = Field(default=None, exclude=True)  # an httpx.Client (or TestClient) to use
    async_client: Any = Field(default=None, exclude=True)  # an httpx.AsyncClient to use
    _backend: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        self._backend = make_backend(base_url=self.base_url, api_key=key, pipeline=self.pipeline,
                                     timeout=self.timeout, client=self.client,
                                     async_client=self.async_client)

    def _request(self) -> RetrievalRequest:
        return RetrievalRequest(self.kb, self.filters, self.mode, self.top_k, self.limit, self.rerank)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [_document(h) for h in self._backend.retrieve(query, self._request())]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        return [_document(h) for h in await self._backend.aretrieve(query, self._request())]


def _document(hit: Mapping[str, Any]) -> Document:
    return Document(page_content=hit.get("text", ""), metadata=hit_metadata(hit), id=hit.get("chunk_id"))


def documents_from_rag(data: Mapping[str, Any] | Any, *, cited_only: bool = False) -> list[Document]:
    """The sources of one answer as Documents, in source-number order.

    `data` is the `rag` field of our OpenAI-compatible response (`completion.rag` with the openai
    client, `response.response_metadata`/raw JSON with others), a `/v1/query` or `/v1/chat`
    response body, or the whole chat-completion JSON (its `rag` field is used). Each Document
    carries `number` (the `[n]` marker in the answer), `cited` and the citations of the answer
    that point at it (`citations`: sentence, support, supported). With `cited_only`, only the
    sources the answer cites."""
    if not isinstance(data, Mapping):
        data = getattr(data, "model_extra", None) or getattr(data, "__dict__", {})
    if "rag" in data and isinstance(data["rag"], Mapping):
        data = data["rag"]
    citations = list(data.get("citations") or [])
    docs = []
    for source in data.get("sources") or []:
        number = source.get("number")
        cites = [c for c in citations if c.get("source_number") == number]
        cited = bool(cites) or bool(source.get("cited"))
        if cited_only and not cited:
            continue
        meta = {k: v for k, v in source.items() if k not in ("text", "snippet")}
        meta["source"] = source.get("document")
        meta["cited"] = cited
        meta["citations"] = [{k: c.get(k) for k in ("number", "sentence", "support", "supported", "origin")}
                             for c in cites]
        text = source.get("text") or source.get("snippet") or ""
        docs.append(Document(page_content=text, metadata=meta, id=source.get("chunk_id")))
    return docs
