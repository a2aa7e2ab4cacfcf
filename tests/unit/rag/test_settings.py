"""Configuration parsing for the server / scale-out options: every one read from its `RAG_*`
environment variable (and from a RAG_CONFIG file), the derived backends, and bad values failing
at start with the value in the message."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.settings import REMOVED_SETTINGS, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No RAG_* variable, RAG_CONFIG or .env file from the machine running the tests."""
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_defaults_are_embedded():
    s = load_settings()
    assert s.qdrant_url is None
    assert s.resolved_vector_backend == "edge"
    assert s.resolved_lexical_backend == "local"
    assert (s.hnsw_m, s.hnsw_ef_construct, s.hnsw_ef) == (16, 100, 128)
    assert (s.on_disk_vectors, s.on_disk_payload, s.scalar_quantization) == (False, False, False)
    assert (s.shard_number, s.replication_factor) == (1, 1)
    assert s.llm_base_url is None and s.llm_local_model is None and s.llm_device == "auto"


def test_qdrant_url_switches_to_server_and_sparse_bm25(clean_env):
    clean_env.setenv("RAG_QDRANT_URL", "http://qdrant:6333")
    clean_env.setenv("RAG_QDRANT_API_KEY", "s3cret")
    s = load_settings()
    assert s.qdrant_url == "http://qdrant:6333"
    assert s.resolved_vector_backend == "server"
    assert s.resolved_lexical_backend == "sparse"  # replicas share BM25 through Qdrant
    assert s.public_dict()["qdrant_api_key"] == "***"
    assert "s3cret" not in json.dumps(s.public_dict())


@pytest.mark.parametrize(("backend", "lexical", "expected"), [
    ("auto", "auto", ("server", "sparse")),
    ("server", "local", ("server", "local")),
    ("local", "auto", ("local", "local")),
    ("local", "sparse", ("local", "sparse")),
    ("edge", "auto", ("edge", "local")),
])
def test_explicit_backends(clean_env, backend, lexical, expected):
    clean_env.setenv("RAG_QDRANT_URL", "http://localhost:6333")
    clean_env.setenv("RAG_VECTOR_BACKEND", backend)
    clean_env.setenv("RAG_LEXICAL_BACKEND", lexical)
    s = load_settings()
    assert (s.resolved_vector_backend, s.resolved_lexical_backend) == expected


def test_server_backend_needs_a_url(clean_env):
    clean_env.setenv("RAG_VECTOR_BACKEND", "server")
    with pytest.raises(ConfigError, match="RAG_QDRANT_URL"):
        load_settings()


@pytest.mark.parametrize(("env", "value", "field", "expected"), [
    ("RAG_HNSW_M", "32", "hnsw_m", 32),
    ("RAG_HNSW_EF_CONSTRUCT", "400", "hnsw_ef_construct", 400),
    ("RAG_HNSW_EF", "256", "hnsw_ef", 256),
    ("RAG_ON_DISK_VECTORS", "true", "on_disk_vectors", True),
    ("RAG_ON_DISK_VECTORS", "0", "on_disk_vectors", False),
    ("RAG_ON_DISK_PAYLOAD", "yes", "on_disk_payload", True),
    ("RAG_SCALAR_QUANTIZATION", "1", "scalar_quantization", True),
    ("RAG_SHARD_NUMBER", "6", "shard_number", 6),
    ("RAG_REPLICATION_FACTOR", "2", "replication_factor", 2),
    ("RAG_LEXICAL_BACKEND", "sparse", "lexical_backend", "sparse"),
    ("RAG_LLM_BASE_URL", "http://vllm:8000/v1", "llm_base_url", "http://vllm:8000/v1"),
    ("RAG_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct", "llm_model", "Qwen/Qwen2.5-7B-Instruct"),
    ("RAG_LLM_LOCAL_MODEL", "/models/qwen2.5-7b", "llm_local_model", Path("/models/qwen2.5-7b")),
    ("RAG_LLM_DEVICE", "cuda:1", "llm_device", "cuda:1"),
    ("RAG_EMBED_DEVICE", "cuda", "embed_device", "cuda"),
    ("RAG_EMBED_BATCH_SIZE", "256", "embed_batch_size", 256),
    ("RAG_RERANK_BATCH_SIZE", "64", "rerank_batch_size", 64),
])
def test_each_server_option_is_read_from_the_environment(clean_env, env, value, field, expected):
    clean_env.setenv(env, value)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(("env", "value"), [
    ("RAG_HNSW_M", "2"),
    ("RAG_HNSW_M", "many"),
    ("RAG_HNSW_EF_CONSTRUCT", "5000"),
    ("RAG_HNSW_EF", "4"),
    ("RAG_ON_DISK_VECTORS", "maybe"),
    ("RAG_ON_DISK_PAYLOAD", "sometimes"),
    ("RAG_SCALAR_QUANTIZATION", "int3"),
    ("RAG_SHARD_NUMBER", "0"),
    ("RAG_SHARD_NUMBER", "1000"),
    ("RAG_REPLICATION_FACTOR", "-1"),
    ("RAG_REPLICATION_FACTOR", "two"),
    ("RAG_VECTOR_BACKEND", "milvus"),
    ("RAG_LEXICAL_BACKEND", "elastic"),
    ("RAG_LLM_DEVICE", "gpu"),
    ("RAG_LLM_TIMEOUT", "0"),
])
def test_bad_values_fail_with_the_value_in_the_message(clean_env, env, value):
    clean_env.setenv(env, value)
    field = env.removeprefix("RAG_").lower()
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert repr(value) in str(info.value)
    assert info.value.field == field


def test_options_from_a_config_file_and_overrides(clean_env, tmp_path):
    config = tmp_path / "rag.toml"
    config.write_text('qdrant_url = "http://qdrant-node1:6333"\nshard_number = 3\nreplication_factor = 2\n'
                      'scalar_quantization = true\nhnsw_ef = 64\n')
    clean_env.setenv("RAG_CONFIG", str(config))
    s = load_settings(hnsw_ef=96)
    assert s.qdrant_url == "http://qdrant-node1:6333"
    assert (s.shard_number, s.replication_factor, s.scalar_quantization) == (3, 2, True)
    assert s.hnsw_ef == 96  # an explicit override wins over the file
    config.write_text("shard_number = 'lots'\n")
    with pytest.raises(ConfigError, match="'lots'"):
        load_settings()


def test_settings_object_rejects_unknown_backend_directly():
    with pytest.raises(ValueError, match="milvus"):
        Settings(vector_backend="milvus")


def test_server_collection_options_fit_the_store(clean_env):
    from rag.adapters.qdrant_store import QdrantClientStore
    from rag.factory import Services

    clean_env.setenv("RAG_QDRANT_URL", "http://qdrant:6333")
    options = Services(load_settings()).collection_options()
    assert options.sparse and options.hnsw_m == 16 and options.shard_number == 1
    inspect.signature(QdrantClientStore.ensure_collection).bind(object(), "kb", 384, options)


ADMIN_SECRET = "adm-Zq81-never-printed"
LLM_SECRET = "llm-Xy77-never-printed"


def test_a_model_level_error_names_the_fields_not_the_secrets(clean_env, capsys):
    """The issue's command: `RAG_CHUNK_OVERLAP=200 RAG_CHUNK_SIZE=100 RAG_API_ADMIN_KEY=… RAG_LLM_API_KEY=…
    rag kbs` used to print the whole settings input, both keys included, to stderr."""
    from typer.testing import CliRunner

    from cli.main import app

    for name, value in {"RAG_CHUNK_OVERLAP": "200", "RAG_CHUNK_SIZE": "100", "RAG_API_ADMIN_KEY": ADMIN_SECRET,
                        "RAG_LLM_API_KEY": LLM_SECRET, "RAG_QDRANT_API_KEY": "qd-secret-77"}.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "chunk_overlap" in info.value.message and "chunk_size" in info.value.message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no ValidationError dump in tracebacks
    result = CliRunner().invoke(app, ["kbs"])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code != 0 and "chunk_overlap" in output
    for secret in (ADMIN_SECRET, LLM_SECRET, "qd-secret-77"):
        assert secret not in output and secret not in str(info.value)


def test_a_bad_secret_value_is_not_echoed(clean_env):
    clean_env.setenv("RAG_CONFIG", str(Path.cwd() / "bad.json"))
    Path("bad.json").write_text(json.dumps({"llm_api_key": {"nested": LLM_SECRET}}))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "llm_api_key" and LLM_SECRET not in str(info.value)


def test_secret_fields_are_masked_everywhere(clean_env):
    clean_env.setenv("RAG_API_ADMIN_KEY", ADMIN_SECRET)
    clean_env.setenv("RAG_LLM_API_KEY", LLM_SECRET)
    s = load_settings()
    for text in (repr(s), str(s), json.dumps(s.public_dict()), s.model_dump_json()):
        assert ADMIN_SECRET not in text and LLM_SECRET not in text
    assert s.public_dict()["api_admin_key"] == "***"
    assert Settings.secret(s.api_admin_key) == ADMIN_SECRET and Settings.secret(s.qdrant_api_key) is None


def test_the_factory_passes_the_plain_secret_to_the_adapters(clean_env, monkeypatch):
    from rag.adapters import llm as llm_module
    from rag.factory import Services

    seen = {}
    monkeypatch.setattr(llm_module, "make_llm", lambda *args, **kw: seen.setdefault("args", args))
    clean_env.setenv("RAG_LLM_API_KEY", LLM_SECRET)
    Services(load_settings()).llm  # noqa: B018
    assert LLM_SECRET in seen["args"]


@pytest.mark.parametrize("value", ["rewrite,hyde", '["rewrite", "hyde"]', " rewrite , hyde "])
def test_list_settings_from_the_environment_as_comma_or_json_lists(monkeypatch, value):
    monkeypatch.setenv("RAG_TRANSFORMS", value)
    monkeypatch.setenv("RAG_CORS_ORIGINS", "http://a.example,http://b.example")
    settings = load_settings()
    assert settings.transforms == ("rewrite", "hyde")
    assert settings.cors_origins == ("http://a.example", "http://b.example")


def test_a_removed_answer_switch_is_ignored_with_one_warning_naming_it(clean_env, tmp_path, caplog):
    """Answer switches measured not to help were deleted (issue 32): one still set in the
    environment, the `.env` file or a RAG_CONFIG file does not fail the start; one warning names
    them all and where their numbers are."""
    clean_env.setenv("RAG_ANSWER_VOTE", "1")
    clean_env.setenv("RAG_CHUNK_HEADERS", "true")
    (tmp_path / ".env").write_text("# old settings\nRAG_CONTEXT_SINGLE=agree\nexport RAG_TOP_K=12\n")
    config = tmp_path / "rag.json"
    config.write_text(json.dumps({"answer_style": "extract", "context_top_n": 4}))
    clean_env.setenv("RAG_CONFIG", str(config))
    with caplog.at_level("WARNING", logger="rag.settings"):
        s = load_settings()
    assert (s.top_k, s.context_top_n) == (12, 4)  # the settings beside them still apply
    assert not any(hasattr(s, name) for name in ("answer_vote", "context_single", "answer_style", "chunk_headers"))
    (record,) = [r for r in caplog.records if r.name == "rag.settings"]
    assert record.levelname == "WARNING" and "Removed levers" in record.getMessage()
    assert all(v in record.getMessage()
               for v in ("RAG_ANSWER_VOTE", "RAG_CONTEXT_SINGLE", "RAG_ANSWER_STYLE", "RAG_CHUNK_HEADERS"))


def test_no_warning_without_removed_settings_and_none_is_still_a_field(clean_env, caplog):
    with caplog.at_level("WARNING", logger="rag.settings"):
        load_settings(top_k=7)
    assert not [r for r in caplog.records if r.name == "rag.settings"]
    assert not set(REMOVED_SETTINGS) & set(Settings.model_fields)


EMBED_SECRET = "emb-Kp42-never-printed"
RERANK_SECRET = "rr-Lq93-never-printed"


def test_model_server_settings_from_the_environment_wire_the_remote_adapters(clean_env):
    from rag.adapters.model_servers import RemoteEmbedder, RemoteReranker
    from rag.factory import Services

    for name, value in {"RAG_EMBED_BASE_URL": "http://gpu:8080/v1", "RAG_EMBED_MODEL": "BAAI/bge-m3",
                        "RAG_EMBED_API": "rag", "RAG_EMBED_API_KEY": EMBED_SECRET, "RAG_EMBED_DIM": "1024",
                        "RAG_EMBED_TIMEOUT": "5", "RAG_EMBED_RETRIES": "1", "RAG_RERANK_BASE_URL": "http://gpu:8080/v1",
                        "RAG_RERANK_API": "cohere", "RAG_RERANK_MODEL": "BAAI/bge-reranker-v2-m3",
                        "RAG_RERANK_API_KEY": RERANK_SECRET, "RAG_BATCH_QUERIES": "false"}.items():
        clean_env.setenv(name, value)
    s = load_settings()
    services = Services(s)
    embedder, reranker = services.embedder, services.reranker
    assert isinstance(embedder, RemoteEmbedder) and isinstance(reranker, RemoteReranker)
    assert (embedder.name, embedder.dim, embedder.api, embedder.server.timeout, embedder.server.retries) == (
        "BAAI/bge-m3", 1024, "rag", 5.0, 1)  # dim configured: nothing asked of the server
    assert (reranker.name, reranker.api) == ("BAAI/bge-reranker-v2-m3", "cohere")
    assert services.embedder_resolution.reason == "BAAI/bge-m3 served by http://gpu:8080/v1 (rag API)"
    for text in (repr(s), json.dumps(s.public_dict()), s.model_dump_json()):
        assert EMBED_SECRET not in text and RERANK_SECRET not in text
    assert s.public_dict()["embed_api_key"] == s.public_dict()["rerank_api_key"] == "***"


@pytest.mark.parametrize(("env", "message"), [
    ({"RAG_EMBED_BASE_URL": "http://gpu/v1"}, "needs embed_model"),
    ({"RAG_RERANK_BASE_URL": "http://gpu/v1", "RAG_RERANK_MODEL": "none"}, "reranking off"),
    ({"RAG_RERANK_BASE_URL": "http://gpu/v1", "RAG_RERANK_API": "cohere"}, "needs rerank_model"),
    ({"RAG_EMBED_API": "tei"}, "embed_api"),
])
def test_model_server_settings_that_cannot_work_fail_at_start(clean_env, env, message):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_an_empty_base_url_means_none(clean_env):
    clean_env.setenv("RAG_EMBED_BASE_URL", "")
    clean_env.setenv("RAG_RERANK_BASE_URL", " ")
    s = load_settings()
    assert s.embed_base_url is None and s.rerank_base_url is None


PG_PASSWORD = "pg-s3cret-pw"


@pytest.mark.parametrize(("env", "expected_url"), [
    ({"RAG_PGVECTOR_URL": f"postgresql://rag:{PG_PASSWORD}@db:5432/vectors"}, "vectors"),
    ({"RAG_CATALOG_URL": f"postgresql://rag:{PG_PASSWORD}@db:5432/catalog"}, "catalog"),  # the default
    ({"RAG_PGVECTOR_URL": f"postgresql://rag:{PG_PASSWORD}@db:5432/vectors",
      "RAG_CATALOG_URL": f"postgresql://rag:{PG_PASSWORD}@db:5432/catalog"}, "vectors"),
])
def test_pgvector_backend_takes_its_url_or_the_catalogs(clean_env, env, expected_url):
    clean_env.setenv("RAG_VECTOR_BACKEND", "pgvector")
    for key, value in env.items():
        clean_env.setenv(key, value)
    s = load_settings()
    assert s.resolved_vector_backend == "pgvector"
    assert s.resolved_lexical_backend == "pgvector"  # BM25 as sparsevecs in the same database
    assert s.resolved_pgvector_url.endswith("/" + expected_url)
    for text in (repr(s), str(s), json.dumps(s.public_dict())):
        assert PG_PASSWORD not in text
    shown = s.public_dict()["pgvector_url" if "RAG_PGVECTOR_URL" in env else "catalog_url"]
    assert shown.startswith("postgresql://rag:***@db")


def test_pgvector_backend_needs_a_url(clean_env):
    clean_env.setenv("RAG_VECTOR_BACKEND", "pgvector")
    with pytest.raises(ConfigError, match=r"RAG_PGVECTOR_URL.*RAG_CATALOG_URL"):
        load_settings()


@pytest.mark.parametrize(("backend", "lexical", "ok"), [
    ("pgvector", "local", True),
    ("pgvector", "sparse", False),
    ("edge", "pgvector", False),
    ("server", "pgvector", False),
])
def test_lexical_backend_must_go_with_the_vector_backend(clean_env, backend, lexical, ok):
    clean_env.setenv("RAG_QDRANT_URL", "http://localhost:6333")
    clean_env.setenv("RAG_PGVECTOR_URL", "postgresql://rag@db/vectors")
    clean_env.setenv("RAG_VECTOR_BACKEND", backend)
    clean_env.setenv("RAG_LEXICAL_BACKEND", lexical)
    if ok:
        assert load_settings().resolved_lexical_backend == lexical
        return
    with pytest.raises(ConfigError, match="does not go with"):
        load_settings()


def test_a_bad_url_value_is_shown_without_its_password(clean_env):
    clean_env.setenv("RAG_CONFIG", str(Path.cwd() / "bad.json"))
    Path("bad.json").write_text(json.dumps({"pgvector_url": f"postgresql://rag:{PG_PASSWORD}@db/v",
                                            "vector_backend": "pgvector", "hnsw_ef": 1}))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert PG_PASSWORD not in str(info.value)
    Path("bad.json").write_text(json.dumps({"pgvector_url": ["not", "a", "url"]}))
    with pytest.raises(ConfigError):
        load_settings()
