"""`POST /v1/embeddings` and `POST /v1/rerank` (api/routes/model_serving.py): what they answer, their
422s naming the field, their keys and body limit; the 503 (with `Retry-After`) of a query whose
embedding server is down; and a replica wired from settings to another replica's models over real
HTTP, answering as that replica does."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rag.adapters.model_servers import RemoteEmbedder
from rag.errors import ModelUnavailable
from rag.factory import Services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.api_helpers import ADMIN, ADMIN_KEY, answering_llm, free_port, make_app, running_server
from tests.unit.kb_fixtures import KB, OverlapReranker

EMBEDDER = HashEmbedder(64).name  # "hash-bow-64", what make_app's services load


@pytest.fixture
def app_services(tmp_path):
    return make_app(tmp_path, reranker=OverlapReranker())


@pytest.fixture
def client(app_services):
    with TestClient(app_services[0]) as c:
        yield c


def test_embeddings_of_a_text_and_of_a_list(client):
    texts = ["The warranty lasts two years.", "保修期为两年。"]
    r = client.post("/v1/embeddings", json={"input": texts, "model": EMBEDDER}, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == EMBEDDER and body["usage"]["prompt_tokens"] > 0
    assert [d["index"] for d in body["data"]] == [0, 1]
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], HashEmbedder(64).encode_corpus(texts),
                               atol=1e-6)
    one = client.post("/v1/embeddings", json={"input": texts[0]}, headers=ADMIN).json()  # model is optional
    assert one["data"][0]["embedding"] == body["data"][0]["embedding"]
    packed = client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"}, headers=ADMIN)
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), dtype=np.float32)
    np.testing.assert_allclose(decoded, body["data"][0]["embedding"], atol=1e-7)


@pytest.mark.parametrize(("body", "field"), [
    ({"input": "x", "model": "text-embedding-3-small"}, "model"),
    ({"input": []}, "input"),
    ({"input": [[1, 2, 3]]}, "input"),
    ({"model": EMBEDDER}, "input"),
    ({"input": "x", "dimensions": 32}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "input_type": "document"}, "input_type"),
])
def test_embeddings_validation_names_the_field(client, body, field):
    r = client.post("/v1/embeddings", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_rerank_in_the_tei_and_the_cohere_shape(client):
    passages = ["Returns within thirty days.", "The warranty lasts two years.", "warranty"]
    r = client.post("/v1/rerank", json={"query": "How long is the warranty?", "texts": passages,
                                        "return_text": True}, headers=ADMIN)
    assert r.status_code == 200, r.text
    expected = OverlapReranker().score("How long is the warranty?", passages)
    assert [h["index"] for h in r.json()] == sorted(range(3), key=lambda i: (-expected[i], i))
    assert {h["index"]: h["score"] for h in r.json()} == pytest.approx(dict(enumerate(expected)))
    assert r.json()[0]["text"] == passages[r.json()[0]["index"]]
    c = client.post("/v1/rerank", json={"query": "How long is the warranty?", "documents": passages, "top_n": 2,
                                        "model": "overlap-reranker"}, headers=ADMIN).json()
    assert c["model"] == "overlap-reranker" and len(c["results"]) == 2
    assert c["results"][0]["relevance_score"] == pytest.approx(max(expected))


@pytest.mark.parametrize(("body", "field"), [
    ({"query": "q"}, "texts"),
    ({"query": "q", "texts": ["a"], "documents": ["a"]}, "texts"),
    ({"query": "q", "texts": []}, "texts"),
    ({"query": "", "texts": ["a"]}, "query"),
    ({"query": "q", "texts": ["a"], "raw_scores": True}, "raw_scores"),
    ({"query": "q", "texts": ["a"], "model": "bge-reranker-large"}, "model"),
])
def test_rerank_validation_names_the_field(client, body, field):
    r = client.post("/v1/rerank", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_rerank_without_a_reranker_is_404(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        r = client.post("/v1/rerank", json={"query": "q", "texts": ["a"]}, headers=ADMIN)
    assert r.status_code == 404 and "no reranker" in r.json()["error"]["message"]


def test_the_routes_need_a_key_and_any_valid_key_will_do(client):
    for path, body in (("/v1/embeddings", {"input": "x"}), ("/v1/rerank", {"query": "q", "texts": ["a"]})):
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    key = client.post("/v1/keys", json={"name": "replica", "read": ["some-other-kb"]}, headers=ADMIN).json()["key"]
    for header in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        assert client.post("/v1/embeddings", json={"input": "x"}, headers=header).status_code == 200


def test_the_request_size_limit_applies(client):
    r = client.post("/v1/embeddings", content=b'{"input": "' + b"a" * (9 * 1024 * 1024) + b'"}',
                    headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_a_query_whose_embedding_server_is_down_is_503_with_the_reason(app_services):
    _, services = app_services
    down = RemoteEmbedder(f"http://127.0.0.1:{free_port()}/v1", EMBEDDER, dim=64, retries=0)
    from api.app import create_app

    with TestClient(create_app(services.with_(embedder=down), warm_up=False)) as client:
        r = client.post("/v1/query", json={"question": "How long is the warranty?", "kb": KB}, headers=ADMIN)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == ModelUnavailable.code
    assert "embedding server http://127.0.0.1:" in r.json()["error"]["message"]
    assert "unreachable" in r.json()["error"]["message"]
    assert r.headers["Retry-After"] == str(ModelUnavailable.retry_after)


def test_a_replica_uses_another_replicas_models_and_answers_alike(app_services, tmp_path):
    app, services = app_services
    question = {"question": "How long is the warranty of the Acme X200?", "kb": KB}
    with running_server(app) as url, TestClient(app) as local:
        settings = Settings(_env_file=None, data_dir=services.settings.data_dir, vector_backend="local",
                            lexical_backend="local", default_kb=KB, api_admin_key=ADMIN_KEY,
                            embed_base_url=f"{url}/v1", embed_api="rag", embed_model=EMBEDDER,
                            embed_api_key=ADMIN_KEY, rerank_base_url=f"{url}/v1", rerank_model="overlap-reranker",
                            rerank_api_key=ADMIN_KEY)
        replica = Services(settings, store=services.store, llm=answering_llm())
        assert services.embedder_resolution.reason != replica.embedder_resolution.reason
        assert "served by http://127.0.0.1" in replica.embedder_resolution.reason
        from api.app import create_app

        with TestClient(create_app(replica, warm_up=False)) as remote:
            ours = local.post("/v1/query", json=question, headers=ADMIN).json()
            theirs = remote.post("/v1/query", json=question, headers=ADMIN).json()
    assert theirs["answer"] == ours["answer"]
    assert [s["chunk_id"] for s in theirs["sources"]] == [s["chunk_id"] for s in ours["sources"]]
    assert [s["rerank_score"] for s in theirs["sources"]] == pytest.approx([s["rerank_score"] for s in ours["sources"]])
