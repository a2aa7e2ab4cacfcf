"""The real `openai` Python client against the service served by uvicorn on a random loopback port:
model listing, non-streaming and streaming completions with the citations in the `rag` extra
field, a follow-up using earlier messages, and errors raised as the client's own exceptions.
Fast (HashEmbedder + scripted LLM); the slow variant uses the bundled embedder and LLM."""

from __future__ import annotations

import time

import pytest

openai = pytest.importorskip("openai")

from api.app import create_app  # noqa: E402
from rag.adapters.llm_fake import ScriptedLLM  # noqa: E402
from rag.errors import LLMError  # noqa: E402
from tests.unit.api_helpers import (ADMIN_KEY, WARRANTY_ANSWER, answering_llm, make_services,  # noqa: E402
                                    running_server)
from tests.unit.kb_fixtures import KB, router  # noqa: E402

QUESTION = "How long is the Acme X200 warranty?"


@pytest.fixture
def server(tmp_path):
    llm = answering_llm(condense="How long does the Acme X200 battery last?")
    services = make_services(tmp_path, llm=llm)
    with running_server(create_app(services)) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=30)
    services.close()


def test_models_are_the_knowledge_bases(server):
    assert [m.id for m in server.models.list()] == [KB]


def test_non_streaming_completion_with_citations(server):
    completion = server.chat.completions.create(model=KB, messages=[{"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == WARRANTY_ANSWER
    assert completion.choices[0].finish_reason == "stop" and completion.model == KB
    rag = completion.model_extra["rag"]
    assert rag["citations"][0]["chunk_id"] == "warranty" and rag["citations"][0]["supported"] is True
    assert rag["sources"][0]["document"] == "acme-x200-manual.pdf" and rag["sources"][0]["page"] == 12
    assert completion.usage.total_tokens > 0


def test_streaming_completion_keeps_the_citations(server):
    stream = server.chat.completions.create(model="default", stream=True,
                                            messages=[{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": QUESTION}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == WARRANTY_ANSWER and len(chunks) > 3
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(final) == 1
    rag = final[0].model_extra["rag"]
    assert rag["citations"][0]["chunk_id"] == "warranty" and rag["kb"] == KB


def test_follow_up_uses_earlier_messages(server):
    completion = server.chat.completions.create(model=KB, messages=[
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": WARRANTY_ANSWER},
        {"role": "user", "content": "And the battery?"}])
    rag = completion.model_extra["rag"]
    assert rag["standalone_question"] == "How long does the Acme X200 battery last?"
    assert rag["sources"][0]["chunk_id"] == "battery"


def test_errors_reach_the_client_as_exceptions(tmp_path):
    services = make_services(tmp_path, llm=ScriptedLLM(router(answer=LLMError("LLM endpoint down"))))
    with running_server(create_app(services)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=30)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="missing", messages=[{"role": "user", "content": QUESTION}])
        with pytest.raises(openai.InternalServerError) as down:
            client.chat.completions.create(model=KB, messages=[{"role": "user", "content": QUESTION}])
        assert down.value.status_code == 503
        with pytest.raises(openai.APIError, match="LLM endpoint down"):
            list(client.chat.completions.create(model=KB, stream=True,
                                                messages=[{"role": "user", "content": QUESTION}]))
        bad_key = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError):
            bad_key.models.list()
    services.close()


@pytest.mark.slow
def test_real_models_upload_then_ask_through_the_openai_client(tmp_path):
    """Bundled multilingual-e5-small + the embedded Qwen2.5 0.5B: upload a document over HTTP, wait
    for its job, then ask through the OpenAI client (streaming) and get a cited answer."""
    import httpx

    from rag.adapters.embedders import resolve_embedder
    from rag.adapters.llm import make_llm
    from rag.factory import build_services
    from rag.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", api_admin_key=ADMIN_KEY, default_kb="manuals",
                        llm_context_window=2048, llm_max_tokens=120, context_top_n=3, rerank_model="none")
    services = build_services(settings, embedder=resolve_embedder("e5").embedder,
                              llm=make_llm(None, n_ctx=2048), reranker=None)
    manual = ("# Zephyr Kettle Manual\n\n## Warranty\n\nThe Zephyr kettle warranty lasts three years from the date "
              "of purchase.\n\n## Cleaning\n\nDescale the kettle every month with citric acid.\n")
    with running_server(create_app(services)) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=120) as http:
            assert http.post("/v1/kbs", json={"name": "manuals"}).status_code == 201
            upload = http.post("/v1/kbs/manuals/documents", files=[("files", ("kettle.md", manual.encode()))])
            job_id = upload.json()["job_id"]
            for _ in range(600):
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["status"] not in ("queued", "running"):
                    break
                time.sleep(0.1)
            assert job["status"] == "succeeded", job
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=300)
        chunks = list(client.chat.completions.create(model="manuals", stream=True, messages=[
            {"role": "user", "content": "How long is the Zephyr kettle warranty?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    rag = next(c for c in chunks if c.choices and c.choices[0].finish_reason == "stop").model_extra["rag"]
    # the API's part: the streamed text is the answer and its sources and citations survive streaming
    # (how good the 0.5B model's wording is belongs to tests/integration/test_pipeline_real.py)
    assert text.strip() and rag["sources"][0]["document"] == "kettle.md", (text, rag)
    assert rag["refused"] or rag["citations"], (text, rag)
    assert all(c["document"] == "kettle.md" for c in rag["citations"])
    services.close()
