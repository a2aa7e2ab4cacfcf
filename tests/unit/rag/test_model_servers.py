"""The remote embedder and reranker (rag/adapters/model_servers.py) against real HTTP servers on
loopback: a scripted one (http.server) that answers each request with the next scripted status and
body and records what it received (retries, 4xx, malformed bodies, the key, the request shapes), a
closed port (unreachable), and our own `rag serve` with a bge-named model (query prefixes)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from rag.adapters.embedders import BGE_QUERY_INSTRUCTIONS, E5_PREFIXES, text_prefixes
from rag.adapters.model_servers import RemoteEmbedder, RemoteReranker
from rag.errors import ConfigError, ModelUnavailable
from rag.testing import HashEmbedder
from tests.unit.api_helpers import free_port

KEY = "sk-model-server-secret-0123456789"
FAST = {"retries": 2, "backoff": 0.01}


class Scripted:
    """A real HTTP server: each POST gets the next (status, body, headers) of `script` (the last one
    repeats); `seen` holds (path, headers, JSON body) of every request."""

    def __init__(self, script: list[tuple[int, Any, dict[str, str]]]) -> None:
        self.script = list(script)
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                scripted.seen.append((self.path, dict(self.headers), body))
                status, answer, headers = scripted.script.pop(0) if len(scripted.script) > 1 else scripted.script[0]
                data = answer if isinstance(answer, bytes) else json.dumps(answer(body) if callable(answer)
                                                                           else answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@contextmanager
def scripted(*script: tuple[int, Any, dict[str, str]] | tuple[int, Any]) -> Iterator[Scripted]:
    server = Scripted([(s[0], s[1], s[2] if len(s) > 2 else {}) for s in script])
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI embeddings answer of HashEmbedder(8) vectors (in reverse order: `index` decides)."""
    vectors = HashEmbedder(8).encode_corpus(body["input"]) * 3.0  # not normalised: the client does it
    data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data[::-1], "model": body["model"]}


def test_5xx_and_429_are_retried_then_it_succeeds(caplog):
    with scripted((503, {"error": "loading"}), (429, {"error": "slow down"}, {"Retry-After": "0"}),
                  (200, embeddings)) as server:
        embedder = RemoteEmbedder(server.url, "served-model", api_key=KEY, **FAST)
        with caplog.at_level(logging.WARNING):
            out = embedder.encode_corpus(["alpha beta", "gamma"])
    assert len(server.seen) == 3
    np.testing.assert_allclose(out, HashEmbedder(8).encode_corpus(["alpha beta", "gamma"]), atol=1e-6)
    assert out.dtype == np.float32 and embedder.dim == 8
    assert "retry 1 of 2" in caplog.text and "HTTP 503" in caplog.text and "retry 2 of 2" in caplog.text


def test_a_4xx_is_not_retried():
    with scripted((422, {"error": {"message": "input is too long"}})) as server:
        embedder = RemoteEmbedder(server.url, "served-model", **FAST)
        with pytest.raises(ModelUnavailable, match="HTTP 422.*input is too long") as caught:
            embedder.encode_queries(["x"])
    assert len(server.seen) == 1
    assert caught.value.http_status == 503 and caught.value.retry_after


def test_retries_run_out():
    with scripted((502, b"bad gateway")) as server:
        with pytest.raises(ModelUnavailable, match=r"HTTP 502: bad gateway \(3 attempt\(s\)\)"):
            RemoteReranker(server.url, **FAST).score("q", ["p"])
    assert len(server.seen) == 3


def test_an_unreachable_server():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelUnavailable, match=r"embedding server http://127\.0\.0\.1:\d+/v1 unreachable"):
        RemoteEmbedder(url, "served-model", **FAST).encode_corpus(["x"])
    with pytest.raises(ModelUnavailable, match="reranking server .* unreachable"):
        RemoteReranker(url, **FAST).warm_up()


@pytest.mark.parametrize("answer", [b"not json", {"data": []}, {"data": [{"index": 0}]},
                                    {"data": [{"index": 3, "embedding": [1.0, 0.0]}]},
                                    {"data": [{"index": 0, "embedding": [float("nan"), 1.0]}]}])
def test_a_malformed_answer_is_an_error_not_retried(answer):
    with scripted((200, answer)) as server:
        with pytest.raises(ModelUnavailable, match="not JSON|malformed"):
            RemoteEmbedder(server.url, "served-model", **FAST).encode_corpus(["x"])
    assert len(server.seen) == 1


def test_dim_is_configured_or_asked_once_and_checked():
    with scripted((200, embeddings)) as server:
        assert RemoteEmbedder(server.url, "served-model", dim=8).dim == 8
        assert server.seen == []  # a configured dimension asks nothing
        asked = RemoteEmbedder(server.url, "served-model")
        assert asked.dim == 8 and asked.dim == 8
        assert [body["input"] for _, _, body in server.seen] == [["dimension probe"]]
        with pytest.raises(ModelUnavailable, match="dimension 8, expected 16"):
            RemoteEmbedder(server.url, "served-model", dim=16).warm_up()


def test_the_key_is_sent_and_never_shown(caplog):
    with caplog.at_level(logging.DEBUG):
        with scripted((200, embeddings)) as server:
            RemoteEmbedder(server.url, "served-model", api_key=KEY).encode_corpus(["x"])
        assert server.seen[0][1]["Authorization"] == f"Bearer {KEY}"
        with scripted((401, {"error": f"invalid key {KEY}"})) as server:
            with pytest.raises(ModelUnavailable) as caught:
                RemoteEmbedder(server.url, "served-model", api_key=KEY, **FAST).encode_corpus(["x"])
        with scripted((503, {"error": f"key {KEY} over quota"})) as server:
            with pytest.raises(ModelUnavailable) as retried:
                RemoteReranker(server.url, api_key=KEY, **FAST).score("q", ["p"])
    assert "HTTP 401" in caught.value.message and "***" in caught.value.message
    for text in (caught.value.message, str(caught.value), retried.value.message, caplog.text):
        assert KEY not in text


def test_userinfo_in_the_url_is_not_shown():
    url = f"http://user:pw-{KEY}@127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelUnavailable) as caught:
        RemoteEmbedder(url, "served-model", retries=0).encode_corpus(["x"])
    assert KEY not in caught.value.message and "http://127.0.0.1:" in caught.value.message


def test_openai_api_adds_the_models_prefixes_as_the_local_embedders_do():
    assert text_prefixes("BAAI/bge-small-en-v1.5") == (BGE_QUERY_INSTRUCTIONS["bge-small-en-v1.5"], "")
    assert text_prefixes("intfloat/multilingual-e5-small") == E5_PREFIXES
    assert text_prefixes("bge-m3") == ("", "") and text_prefixes("nomic-embed-text") == ("", "")
    with scripted((200, embeddings)) as server:
        for model in ("BAAI/bge-small-en-v1.5", "intfloat/multilingual-e5-small"):
            embedder = RemoteEmbedder(server.url, model)
            embedder.encode_queries(["warranty?"])
            embedder.encode_corpus(["The warranty lasts two years."])
        rag_api = RemoteEmbedder(server.url, "BAAI/bge-small-en-v1.5", api="rag")
        rag_api.encode_queries(["warranty?"])
    sent = [(body["input"][0], body.get("input_type")) for _, _, body in server.seen]
    instruction = BGE_QUERY_INSTRUCTIONS["bge-small-en-v1.5"]
    assert sent == [(instruction + "warranty?", None), ("The warranty lasts two years.", None),
                    ("query: warranty?", None), ("passage: The warranty lasts two years.", None),
                    ("warranty?", "query")]  # api "rag": the other server's embedder adds its own
    assert server.seen[0][0] == "/v1/embeddings" and server.seen[0][2]["model"] == "BAAI/bge-small-en-v1.5"


def test_batches_of_batch_size():
    with scripted((200, embeddings)) as server:
        out = RemoteEmbedder(server.url, "served-model", batch_size=2).encode_corpus(["a", "b", "c", "d", "e"])
    assert [len(body["input"]) for _, _, body in server.seen] == [2, 2, 1] and out.shape == (5, 8)


def test_rerank_request_shapes_and_logits():
    def tei(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"index": i, "score": 0.1 * (i + 1)} for i in range(len(body["texts"]))][::-1]

    def cohere_logits(body: dict[str, Any]) -> dict[str, Any]:
        logits = [-2.0, 0.5, 3.0]
        return {"results": [{"index": i, "relevance_score": logits[i]} for i in range(len(body["documents"]))]}

    with scripted((200, tei)) as server:
        scores = RemoteReranker(server.url, batch_size=2).score_pairs([("q1", "a"), ("q2", "b"), ("q1", "c")])
    assert scores == pytest.approx([0.1, 0.1, 0.2])  # grouped by query: q1 -> [a, c], q2 -> [b]
    assert [(b["query"], b["texts"], b["raw_scores"]) for _, _, b in server.seen] == [
        ("q1", ["a", "c"], False), ("q2", ["b"], False)]
    with scripted((200, cohere_logits)) as server:
        scores = RemoteReranker(server.url, "jina-reranker-v2", api="cohere").score("q", ["a", "b", "c"])
    body = server.seen[0][2]
    assert body["model"] == "jina-reranker-v2" and body["documents"] == ["a", "b", "c"]
    assert scores == pytest.approx([1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-3.0))])


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ConfigError, match="served model's name"):
        RemoteEmbedder("http://h/v1", "auto")
    with pytest.raises(ConfigError, match="http"):
        RemoteEmbedder("h:8080", "m")
    with pytest.raises(ConfigError, match="Cohere"):
        RemoteReranker("http://h/v1", "auto", api="cohere")
    with pytest.raises(ConfigError, match="unknown"):
        RemoteEmbedder("http://h/v1", "m", api="tei")
