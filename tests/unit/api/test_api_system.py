"""Probes, metrics, CORS, the chat page, generic HTTP errors, and the small helpers behind them
(file name sanitising, tags, the Prometheus text format, the streaming body limit)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.app import create_app
from api.errors import install_error_handlers
from api.metrics import Metrics
from api.uploads import BodyLimitMiddleware, sanitize_filename
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import InvalidRequest, ModelError
from rag.types import parse_tags
from tests.unit.api_helpers import ADMIN, WARRANTY_ANSWER, make_app, make_services
from tests.unit.kb_fixtures import KB, router


def _wait_ready(client: TestClient) -> dict:
    for _ in range(200):
        r = client.get("/readyz", headers=ADMIN)
        if r.status_code == 200 or any(c.get("error") for c in r.json()["checks"].values()):
            return r
    raise AssertionError("never ready")


def test_health_and_readiness(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = _wait_ready(client)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["checks"]["store"] == {"ok": True, "backend": "local",
                                                                    "knowledge_bases": 1}
    assert body["checks"]["embedder"]["model"] == "hash-bow-64" and body["checks"]["embedder"]["loaded"] is True
    assert body["reranking"]["enabled"] is False and body["llm"]["endpoint"].startswith("embedded")
    assert body["auth"] == "enabled" and ADMIN["Authorization"].split()[1] not in r.text


def test_probes_without_a_key_give_status_only(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        _wait_ready(client)
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready"}  # probes keep working
        assert "hash-bow" not in r.text and "knowledge_bases" not in r.text
        detailed = client.get("/readyz", headers=ADMIN)
        assert detailed.json()["checks"]["store"]["knowledge_bases"] == 1
        assert client.get("/readyz", headers={"X-API-Key": "rag-wrong"}).status_code == 401
        denied = client.get("/metrics")
        assert denied.status_code == 401 and "RAG_PUBLIC_METRICS" in denied.json()["error"]["message"]
        assert client.get("/metrics", headers=ADMIN).status_code == 200


def test_public_metrics_setting(tmp_path):
    app, _ = make_app(tmp_path, public_metrics=True)
    with TestClient(app) as client:
        r = client.get("/metrics")
    assert r.status_code == 200 and "rag_http_requests_total" in r.text


class BrokenEmbedder:
    name, dim = "broken", 64

    def encode_queries(self, texts):
        raise ModelError("model files missing")

    encode_corpus = encode_queries

    def warm_up(self):
        raise ModelError("model files missing")


def test_readiness_fails_when_the_model_cannot_load(tmp_path):
    services = make_services(tmp_path).with_(embedder=BrokenEmbedder())  # the same store, another model
    with TestClient(create_app(services)) as client:
        r = _wait_ready(client)
    assert r.status_code == 503 and r.json()["status"] == "not_ready"
    assert r.json()["checks"]["embedder"]["error"] == "model files missing"


def test_metrics_count_requests_errors_and_stages(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        client.post("/v1/query", json={"question": "warranty?", "kb": KB}, headers=ADMIN)
        client.post("/v1/query", json={"question": "warranty?", "kb": "missing"}, headers=ADMIN)
        client.post("/v1/query", json={"question": "warranty?"})
        r = client.get("/metrics", headers=ADMIN)
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'rag_http_requests_total{method="POST",route="/v1/query",status="200"} 1' in text
    assert 'rag_http_requests_total{method="POST",route="/v1/query",status="404"} 1' in text
    assert 'rag_errors_total{code="not_found"} 1' in text and 'rag_errors_total{code="unauthorized"} 1' in text
    assert 'rag_stage_duration_seconds_count{stage="generate"} 1' in text
    assert 'rag_http_request_duration_seconds_bucket{method="POST",route="/v1/query",le="+Inf"} 3' in text
    assert "# TYPE rag_ingest_jobs_active gauge" in text and "rag_ingest_jobs_active 0" in text


def test_metrics_have_ttft_and_tpot_of_generated_answers_plain_and_streamed(tmp_path):
    app, _ = make_app(tmp_path, llm=ScriptedLLM(router(answer=WARRANTY_ANSWER), delta_seconds=0.002))
    with TestClient(app) as client:
        plain = client.post("/v1/query", json={"question": "warranty?", "kb": KB}, headers=ADMIN).json()
        client.post("/v1/query", json={"question": "warranty?", "kb": KB, "stream": True}, headers=ADMIN)
        text = client.get("/metrics", headers=ADMIN).text
    assert plain["timings"]["ttft"] >= 0.002 and plain["timings"]["tpot"] >= 0.002
    assert plain["info"]["generation"]["output_tokens"] > 1
    assert "# TYPE rag_llm_time_to_first_token_seconds histogram" in text
    assert "rag_llm_time_to_first_token_seconds_count 2" in text
    assert 'rag_llm_time_to_first_token_seconds_bucket{le="+Inf"} 2' in text
    assert "rag_llm_time_per_output_token_seconds_count 2" in text
    assert 'stage="ttft"' not in text and 'stage="tpot"' not in text  # not stages: their own histograms


def test_histogram_and_counter_text_format():
    metrics = Metrics()
    metrics.stages.observe(0.003, "embed")
    metrics.stages.observe(0.2, "embed")
    metrics.requests.inc("GET", '/x"y', "200")
    text = metrics.render()
    assert 'rag_stage_duration_seconds_bucket{stage="embed",le="0.001"} 0' in text
    assert 'rag_stage_duration_seconds_bucket{stage="embed",le="0.005"} 1' in text
    assert 'rag_stage_duration_seconds_bucket{stage="embed",le="0.25"} 2' in text
    assert 'rag_stage_duration_seconds_bucket{stage="embed",le="+Inf"} 2' in text
    assert 'rag_stage_duration_seconds_count{stage="embed"} 2' in text
    assert 'route="/x\\"y"' in text


def test_cors_allows_the_configured_origin_only(tmp_path):
    app, _ = make_app(tmp_path, cors_origins="http://chat.example.com")
    with TestClient(app) as client:
        pre = client.options("/v1/query", headers={"Origin": "http://chat.example.com",
                                                   "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "authorization,content-type"})
        other = client.options("/v1/query", headers={"Origin": "http://evil.example.com",
                                                     "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://chat.example.com"
    assert "access-control-allow-origin" not in other.headers


def test_chat_page_and_generic_errors(tmp_path):
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        page = client.get("/")
        script, style = client.get("/static/index.js").text, client.get("/static/index.css").text
        missing = client.get("/v1/nothing-here", headers=ADMIN)
        wrong_method = client.put("/v1/query", headers=ADMIN)
        schema = client.get("/openapi.json").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'fetch("/v1/chat"' in script and "readEvents" in script and 'a.cite' in style
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    paths = set(schema["paths"])
    assert {"/v1/query", "/v1/chat", "/v1/chat/completions", "/v1/models", "/v1/kbs", "/v1/kbs/{kb}/documents",
            "/v1/kbs/{kb}/documents/{doc_id}", "/v1/jobs/{job_id}", "/v1/conversations/{conversation_id}",
            "/v1/keys", "/healthz", "/readyz", "/metrics"} <= paths
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.parametrize("raw,clean", [("report.pdf", "report.pdf"), ("../../etc/passwd.txt", "passwd.txt"),
                                       ("C:\\Users\\me\\notes.md", "notes.md"), (".env.txt", "env.txt"),
                                       ("a<b>:c?.txt", "a_b__c_.txt"), ("员工休假制度.md", "员工休假制度.md"),
                                       ("x" * 300 + ".md", "x" * 197 + ".md")])
def test_sanitize_filename(raw, clean):
    assert sanitize_filename(raw) == clean


@pytest.mark.parametrize("raw", ["", "..", "/", "...", None])
def test_unusable_file_names(raw):
    with pytest.raises(InvalidRequest):
        sanitize_filename(raw)


def test_parse_tags():
    assert parse_tags(["team=hr", "lang=en, year=2024"]) == {"team": "hr", "lang": "en", "year": "2024"}
    with pytest.raises(InvalidRequest, match="'team' in tags") as err:
        parse_tags(["team"])
    assert err.value.field == "tags"


def test_body_limit_counts_streamed_bodies_without_content_length():
    inner = FastAPI()
    install_error_handlers(inner)

    @inner.post("/echo")
    async def echo(request: Request) -> dict:
        return {"size": len(await request.body())}

    inner.add_middleware(BodyLimitMiddleware, limit_for=lambda scope: 1000)

    def chunks(n):
        for _ in range(n):
            yield b"x" * 100

    with TestClient(inner) as client:
        small = client.post("/echo", content=chunks(5))
        big = client.post("/echo", content=chunks(20))
    assert small.status_code == 200 and small.json() == {"size": 500}
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
