"""Shared pieces of the API tests: an app over the small handbook knowledge base of
`kb_fixtures` (real BM25 and vector store, HashEmbedder, scripted LLM), SSE parsing, and a real
uvicorn server on a random loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from api.app import create_app
from rag.adapters.llm_fake import ScriptedLLM
from rag.factory import Services
from tests.unit.kb_fixtures import KB, build_services, router

ADMIN_KEY = "admin-test-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WARRANTY_ANSWER = "The Acme X200 warranty lasts two years from the date of purchase [1]."


def answering_llm(answer: str = WARRANTY_ANSWER, **replies: Any) -> ScriptedLLM:
    """A scripted LLM answering every answer prompt with `answer` (and other prompt kinds from `replies`)."""
    return ScriptedLLM(router(answer=answer, **replies))


def make_services(tmp_path: Path, *, llm: Any = None, **settings: Any) -> Services:
    settings.setdefault("api_admin_key", ADMIN_KEY)
    settings.setdefault("default_kb", KB)
    return build_services(tmp_path, llm=llm if llm is not None else answering_llm(), **settings)


def make_app(tmp_path: Path, *, llm: Any = None, **settings: Any) -> tuple[FastAPI, Services]:
    services = make_services(tmp_path, llm=llm, **settings)
    return create_app(services), services


def wait_for_job(client, job_id: str, timeout: float = 60) -> dict:
    """Poll `GET /v1/jobs/{job_id}` (as the admin) until the job has finished or `timeout` seconds
    passed; returns the last job record (the caller asserts its status)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()
        if job["status"] in ("succeeded", "partial", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a Server-Sent Events body; data is parsed JSON (or the raw string)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        raw = "\n".join(data)
        try:
            out.append((event, json.loads(raw)))
        except json.JSONDecodeError:
            out.append((event, raw))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(app: FastAPI, timeout: float = 20.0, port: int | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1:<port> (default: a random one) in a thread; yields the base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def model_server_app(data_dir: Path, embedder: Any, reranker: Any = None, admin_key: str = ADMIN_KEY) -> FastAPI:
    """A `rag serve` app whose loaded models are `embedder` and `reranker` (what `/v1/embeddings` and
    `/v1/rerank` serve), over an empty data folder, with a scripted LLM and no warm-up thread."""
    from rag.factory import build_services
    from rag.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir, api_admin_key=admin_key, vector_backend="local")
    return create_app(build_services(settings, embedder=embedder, reranker=reranker, llm=answering_llm()),
                      warm_up=False)


@contextmanager
def serving_models(data_dir: Path, embedder: Any, reranker: Any = None, port: int | None = None) -> Iterator[str]:
    """`model_server_app` served by uvicorn on loopback; yields its model base URL (".../v1")."""
    with running_server(model_server_app(data_dir, embedder, reranker), port=port) as url:
        yield f"{url}/v1"
