"""The LangChain and LlamaIndex retrievers against the real API app (httpx over ASGI in-process,
and a real uvicorn server on 127.0.0.1) and in-process over the pipeline; the citations helper
on a real chat-completion response."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from integrations import langchain as lc  # noqa: E402
from integrations import llamaindex as li  # noqa: E402
from integrations.backends import (  # noqa: E402
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServiceError,
)
from tests.unit.api_helpers import ADMIN, ADMIN_KEY, make_app, running_server  # noqa: E402
from tests.unit.kb_fixtures import KB  # noqa: E402

BASE = "http://testserver"
QUESTION = "How long is the Acme X200 warranty?"


@pytest.fixture
def app_services(tmp_path):
    return make_app(tmp_path)


def _clients(app):
    # sync retrieval goes through Starlette's TestClient (an httpx.Client), async through httpx's ASGI transport
    from fastapi.testclient import TestClient

    return TestClient(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def _lc(app, **kwargs):
    sync, asynchronous = _clients(app)
    kwargs.setdefault("api_key", ADMIN_KEY)
    return lc.RagRetriever(base_url=BASE, kb=KB, client=sync, async_client=asynchronous, **kwargs)


def test_langchain_retriever_over_rest_returns_documents_with_metadata(app_services):
    app, _ = app_services
    docs = _lc(app, limit=3).invoke(QUESTION)
    assert 1 <= len(docs) <= 3
    top = docs[0]
    assert "warranty lasts two years" in top.page_content
    meta = top.metadata
    assert meta["source"] == "acme-x200-manual.pdf" and meta["title"] == "Acme X200 Manual"
    assert meta["section_path"] == ["Warranty"] and meta["section"] == "Warranty" and meta["page"] == 12
    assert meta["end"] - meta["start"] == len(top.page_content)
    assert top.id == meta["chunk_id"] == "warranty"
    assert {p["list"] for p in meta["provenance"]} == {"dense", "bm25"}
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_langchain_retriever_async_filters_and_modes(app_services):
    app, _ = app_services
    retriever = _lc(app, filters={"team": "hr"}, mode="bm25", limit=5)
    docs = asyncio.run(retriever.ainvoke("年假需要提前多久申请"))
    assert docs and all(d.metadata["tags"]["team"] == "hr" for d in docs)
    assert all({p["list"] for p in d.metadata["provenance"]} == {"bm25"} for d in docs)
    assert "提前两周" in docs[0].page_content


def test_rest_errors_map_to_exceptions(tmp_path):
    app, services = make_app(tmp_path)
    with pytest.raises(AuthenticationError) as no_key:
        _lc(app, api_key=None).invoke(QUESTION)
    assert no_key.value.status == 401
    # a key that may read another knowledge base only
    from fastapi.testclient import TestClient

    created = TestClient(app).post("/v1/keys", json={"name": "other", "read": ["other"]}, headers=ADMIN)
    assert created.status_code in (200, 201), created.text
    with pytest.raises(PermissionDeniedError):
        _lc(app, api_key=created.json()["key"]).invoke(QUESTION)
    with pytest.raises(NotFoundError) as missing:
        lc.RagRetriever(base_url=BASE, api_key=ADMIN_KEY, kb="nope", client=_clients(app)[0]).invoke(QUESTION)
    assert "nope" in missing.value.message
    with pytest.raises(InvalidRequestError) as bad:
        _lc(app, filters=["not-a-pair"]).invoke(QUESTION)
    assert bad.value.field == "filter"
    with pytest.raises(ServiceError):
        lc.RagRetriever(base_url="http://127.0.0.1:9", api_key="k", timeout=2).invoke(QUESTION)


def test_retrievers_against_a_real_uvicorn_server(app_services):
    app, _ = app_services
    with running_server(app) as base_url:
        docs = lc.RagRetriever(base_url=base_url, api_key=ADMIN_KEY, kb=KB, limit=2).invoke(QUESTION)
        nodes = li.RagRetriever(base_url=base_url, api_key=ADMIN_KEY, kb=KB, limit=2).retrieve(QUESTION)
        anodes = asyncio.run(li.RagRetriever(base_url=base_url, api_key=ADMIN_KEY, kb=KB, limit=2).aretrieve(QUESTION))
    assert docs[0].id == nodes[0].node.node_id == anodes[0].node.node_id == "warranty"


def test_llamaindex_retriever_nodes(app_services):
    app, _ = app_services
    sync, asynchronous = _clients(app)
    retriever = li.RagRetriever(base_url=BASE, api_key=ADMIN_KEY, kb=KB, limit=3, client=sync,
                                async_client=asynchronous)
    nodes = retriever.retrieve(QUESTION)
    top = nodes[0]
    assert top.node.node_id == "warranty" and "two years" in top.node.get_content()
    assert top.node.start_char_idx == top.node.metadata["start"]
    assert top.node.end_char_idx - top.node.start_char_idx == len(top.node.text)
    assert top.score == pytest.approx(top.node.metadata["score"])
    # what the LLM reads carries the human metadata, not the provenance lists
    llm_text = top.node.get_content(metadata_mode="llm")
    assert "Acme X200 Manual" in llm_text and "provenance" not in llm_text
    anodes = asyncio.run(retriever.aretrieve(QUESTION))
    assert [n.node.node_id for n in anodes] == [n.node.node_id for n in nodes]


def test_in_process_retrievers_match_rest(app_services):
    app, services = app_services
    pipeline = services.pipeline
    local = lc.RagRetriever(pipeline=pipeline, kb=KB, limit=3).invoke(QUESTION)
    remote = _lc(app, limit=3).invoke(QUESTION)
    assert [d.id for d in local] == [d.id for d in remote]
    assert [d.metadata["score"] for d in local] == pytest.approx([d.metadata["score"] for d in remote])
    nodes = asyncio.run(li.RagRetriever(pipeline=pipeline, kb=KB, limit=3).aretrieve(QUESTION))
    assert [n.node.node_id for n in nodes] == [d.id for d in local]
    with pytest.raises(NotFoundError):
        lc.RagRetriever(pipeline=pipeline, kb="nope").invoke(QUESTION)
    with pytest.raises(InvalidRequestError):
        lc.RagRetriever(pipeline=pipeline, kb=KB, mode="fuzzy").invoke(QUESTION)


def test_exactly_one_backend_and_the_key_is_not_shown():
    with pytest.raises(ValueError):
        lc.RagRetriever(kb=KB)
    with pytest.raises(ValueError):
        li.RagRetriever(base_url="ftp://x")
    retriever = lc.RagRetriever(base_url=BASE, api_key="very-secret-key")
    assert "very-secret-key" not in repr(retriever) and "very-secret-key" not in str(retriever.model_dump())


def test_documents_from_rag_field_of_chat_completion(app_services):
    from fastapi.testclient import TestClient

    app, _ = app_services
    body = {"model": KB, "messages": [{"role": "user", "content": QUESTION}]}
    response = TestClient(app).post("/v1/chat/completions", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    completion = response.json()
    docs = lc.documents_from_rag(completion)
    assert docs and [d.metadata["number"] for d in docs] == sorted(d.metadata["number"] for d in docs)
    cited = lc.documents_from_rag(completion["rag"], cited_only=True)
    assert cited and all(d.metadata["cited"] for d in cited)
    assert "two years" in cited[0].page_content
    assert cited[0].metadata["citations"][0]["sentence"]
    # the /v1/query body has the same shape
    query = TestClient(app).post("/v1/query", json={"question": QUESTION, "kb": KB}, headers=ADMIN).json()
    assert [d.id for d in lc.documents_from_rag(query)] == [s["chunk_id"] for s in query["sources"]]


def test_langchain_rag_chain_and_llamaindex_query_engine_use_our_retrieval(app_services):
    """The README's examples: our retrieval inside a LangChain chain and a LlamaIndex query engine."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    app, services = app_services
    seen = {}

    def fmt(docs):
        seen["context"] = "\n\n".join(f"[{i}] {d.metadata['title']}: {d.page_content}" for i, d in enumerate(docs, 1))
        return seen["context"]

    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the sources, cite [n].\n\n{context}"),
                                               ("human", "{question}")])
    chain = ({"context": _lc(app, limit=3) | fmt, "question": RunnablePassthrough()} | prompt
             | FakeListChatModel(responses=["Two years [1]."]) | StrOutputParser())
    assert chain.invoke(QUESTION) == "Two years [1]."
    assert seen["context"].startswith("[1] Acme X200 Manual: The Acme X200 warranty lasts two years")
    engine = RetrieverQueryEngine.from_args(li.RagRetriever(pipeline=services.pipeline, kb=KB, limit=3),
                                            llm=MockLLM(max_tokens=8))
    response = engine.query(QUESTION)
    assert response.source_nodes[0].node.node_id == "warranty"
