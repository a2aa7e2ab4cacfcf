"""Ingest through an embedding server (RAG_EMBED_BASE_URL) that is down: the run stops with a
ModelUnavailable, every document it had started is left pending (none is lost or half-written),
and the next run, with the server up (our own `rag serve` on a loopback port), indexes them all.
The CLI says so in one line and exits 75 (retry later)."""

from __future__ import annotations

import pytest

from ingest.service import build_ingestor
from rag.errors import ModelUnavailable
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.api_helpers import ADMIN_KEY, free_port, serving_models
from tests.unit.cli_helpers import env, run  # noqa: F401 - the fixture
from tests.unit.fixtures_files import write_mixed_folder

SERVED = HashEmbedder(64)


def test_an_unreachable_server_leaves_the_documents_pending_and_the_next_run_completes(tmp_path):
    docs = write_mixed_folder(tmp_path / "docs")
    port = free_port()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="edge", chunk_size=200,
                        chunk_overlap=20, embed_base_url=f"http://127.0.0.1:{port}/v1", embed_model=SERVED.name,
                        embed_dim=SERVED.dim, embed_retries=1, embed_api_key=ADMIN_KEY)
    services = build_services(settings)
    try:
        with pytest.raises(ModelUnavailable, match="unreachable"):
            build_ingestor(services, "kb1").ingest_folder(docs)
        states = {d.source: d.state for d in services.catalog.list_docs("kb1")}
        assert states and set(states.values()) == {"pending"}
        assert services.store.count("kb1") == 0  # nothing half-written
        record = services.catalog.get_kb("kb1")
        assert (record.embed_model, record.dim) == (SERVED.name, SERVED.dim)

        with serving_models(tmp_path / "server", HashEmbedder(64), port=port):
            report = build_ingestor(services, "kb1").ingest_folder(docs)
        indexed = {d.source for d in services.catalog.list_docs("kb1", state="indexed")}
        assert set(states) <= indexed and not services.catalog.list_docs("kb1", state="pending")
        assert report.count("indexed") == len(indexed)
        assert services.kbs.open("kb1").check().ok
    finally:
        services.close()


def test_the_cli_says_it_in_one_line_and_exits_75(env, tmp_path, monkeypatch):  # noqa: F811 - the fixture
    port = free_port()
    monkeypatch.setenv("RAG_EMBED_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("RAG_EMBED_MODEL", SERVED.name)
    monkeypatch.setenv("RAG_EMBED_DIM", str(SERVED.dim))
    monkeypatch.setenv("RAG_EMBED_RETRIES", "0")
    monkeypatch.setenv("RAG_EMBED_API_KEY", "sk-never-printed-42")
    result = run("ingest", str(env), "--kb", "handbook")
    assert result.exit_code == 75, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "embedding server http://127.0.0.1:" in errors[0] and "unreachable" in errors[0]
    assert "sk-never-printed-42" not in result.output
    with serving_models(tmp_path / "server", HashEmbedder(64), port=port):
        monkeypatch.setenv("RAG_EMBED_API_KEY", ADMIN_KEY)
        again = run("ingest", str(env), "--kb", "handbook")
    assert again.exit_code == 0, again.output
