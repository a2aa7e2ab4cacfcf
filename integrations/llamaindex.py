"""LlamaIndex: our knowledge bases as a `BaseRetriever` for query engines and agents.

    from integrations.llamaindex import RagRetriever
    from llama_index.core.query_engine import RetrieverQueryEngine
    retriever = RagRetriever(base_url="http://127.0.0.1:8000", api_key="...", kb="handbook")
    nodes = retriever.retrieve("How long is the warranty?")      # or await retriever.aretrieve(...)
    engine = RetrieverQueryEngine.from_args(retriever, llm=...)

Each `NodeWithScore` holds a `TextNode` (id = our chunk id, text = the chunk, metadata as in the
LangChain retriever: source, title, section_path, section, page, start, end, doc_id, kind, tags,
provenance, rerank_score) and its score: the rerank score when reranked, else the fused
score. `start_char_idx`/`end_char_idx` are the chunk's span in the parsed document. Give
`pipeline=services.pipeline` instead of `base_url` to query in this process. Needs
`pip install "rag-service[llamaindex]"`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError('the LlamaIndex retriever needs llama-index-core: pip install '
                              '"rag-service[llamaindex]"', name=exc.name) from exc

from integrations.backends import RetrievalRequest, hit_metadata, make_backend

__all__ = ["RagRetriever"]

# metadata too long or too structured to put into the text an LLM sees
_HIDDEN_FROM_LLM = ["provenance", "chunk_id", "doc_id", "start", "end", "score", "rerank_score", "tags", "kind",
                    "section_path"]


class RagRetriever(BaseRetriever):
    """Retrieval from one knowledge base over the REST API (`base_url`, `api_key`) or in-process
    (`pipeline`); `kb`, `filters`, `mode` (hybrid | dense | bm25), `top_k`, `limit`, `rerank` as
    in `/v1/query`."""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, pipeline: Any = None,
                 kb: str | None = None, filters: Mapping[str, Any] | list[str] | None = None, mode: str = "hybrid",
                 top_k: int | None = None, limit: int | None = None, rerank: bool | None = None,
                 timeout: float = 60.0, client: Any = None, async_client: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._backend = make_backend(base_url=base_url, api_key=api_key, pipeline=pipeline, timeout=timeout,
                                     client=client, async_client=async_client)
        self._request = RetrievalRequest(kb, filters, mode, top_k, limit, rerank)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(h) for h in self._backend.retrieve(query_bundle.query_str, self._request)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(h) for h in await self._backend.aretrieve(query_bundle.query_str, self._request)]


def _node(hit: Mapping[str, Any]) -> NodeWithScore:
    node = TextNode(id_=hit.get("chunk_id"), text=hit.get("text", ""), metadata=hit_metadata(hit),
                    start_char_idx=hit.get("start"), end_char_idx=hit.get("end"),
                    excluded_llm_metadata_keys=list(_HIDDEN_FROM_LLM),
                    excluded_embed_metadata_keys=list(_HIDDEN_FROM_LLM))
    score = hit.get("rerank_score")
    return NodeWithScore(node=node, score=float(score if score is not None else hit.get("score", 0.0)))
