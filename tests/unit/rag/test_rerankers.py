"""Rerankers through their real code paths (FlagEmbedding and sentence-transformers) on a small
cross-encoder built here from the bundled MiniLM weights (random classification head, so the
scores mean nothing, but loading, batching and normalisation are real), plus model lookup
without network: RAG_MODELS_DIR, ~/.rag/models and a fake Hugging Face cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rag.adapters.device import resolve_device
from rag.adapters.rerankers import CrossEncoderAdapter, FlagRerankerAdapter, display_name, resolve_reranker
from rag.errors import ConfigError, ModelError
from rag.protocols import Reranker
from rag.testing import minilm_cross_encoder

QUERY = "How long is the warranty of the Acme X200?"
PASSAGES = [
    "The Acme X200 is covered by a warranty of two years from the date of purchase.",
    "The battery is an 18 V lithium-ion pack.",
    "Acme X200 的保修期为自购买之日起两年。",
    "Shipping takes three to five business days. " * 30,  # longer than max_length: truncated
    "Returns are accepted within 30 days.",
    "The drill weighs 1.6 kg.",
    "Customer service is open on weekdays.",
    "Use only Acme chargers.",
    "The chuck holds bits up to 13 mm.",
    "Two speed settings: 0-450 and 0-1800 rpm.",
]


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    """A BertForSequenceClassification (num_labels=1) from the bundled all-MiniLM-L6-v2 weights."""
    return minilm_cross_encoder(tmp_path_factory.mktemp("models") / "minilm-reranker")


@pytest.fixture
def fake_dir(tmp_path) -> Path:
    """Looks like a cross-encoder directory to the lookup code (no loadable weights)."""
    path = tmp_path / "fake-reranker"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (path / "model.safetensors").write_bytes(b"not really weights")
    return path


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No real model directory or hub cache of this machine may leak into lookups."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "RAG_MODELS_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _fake_hub_entry(hub: Path, repo: str, model_dir: Path, revision: str = "0123abcd") -> Path:
    """A `models--org--name` cache entry whose snapshot files are symlinks, as huggingface_hub makes."""
    entry = hub / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in model_dir.iterdir():
        (snapshot / file.name).symlink_to(file)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision)
    return snapshot


# ---- real scoring (loads torch models: slow on a 2-core CPU) ----------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cls", [FlagRerankerAdapter, CrossEncoderAdapter])
def test_scores_are_probabilities_in_order(ce_dir, cls):
    reranker = cls(ce_dir, max_length=64, batch_size=4, device="cpu")
    assert isinstance(reranker, Reranker) and reranker.name == "minilm-reranker"
    scores = reranker.score(QUERY, PASSAGES)  # 10 pairs in batches of 4
    assert len(scores) == len(PASSAGES)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(round(s, 6) for s in scores)) > 1, "different passages get different scores"
    assert reranker.score(QUERY, PASSAGES) == scores  # deterministic
    one_by_one = [reranker.score(QUERY, [p])[0] for p in PASSAGES[:3]]
    assert one_by_one == pytest.approx(scores[:3], abs=1e-5)  # batching and padding do not change scores
    assert reranker.score(QUERY, []) == []


@pytest.mark.slow
def test_both_adapters_agree(ce_dir):
    flag = FlagRerankerAdapter(ce_dir, max_length=64, batch_size=16, device="cpu").score(QUERY, PASSAGES[:5])
    cross = CrossEncoderAdapter(ce_dir, max_length=64, batch_size=16, device="cpu").score(QUERY, PASSAGES[:5])
    assert flag == pytest.approx(cross, abs=1e-5)


def test_empty_passages_do_not_load_the_model(tmp_path):
    reranker = FlagRerankerAdapter(tmp_path / "nothing-here", device="cpu")
    assert reranker.score("q", []) == []
    with pytest.raises(ModelError, match="not a local model directory"):
        reranker.score("q", ["p"])


@pytest.mark.slow
def test_auto_finds_a_bge_reranker_in_the_hub_cache(ce_dir, clean_env, caplog):
    snapshot = _fake_hub_entry(clean_env / "hf" / "hub", "BAAI/bge-reranker-base", ce_dir)
    with caplog.at_level(logging.INFO, logger="rag.adapters.rerankers"):
        reranker = resolve_reranker("auto", max_length=64, batch_size=8, device="cpu", backend="flag")
    assert isinstance(reranker, FlagRerankerAdapter)
    assert reranker.model_ref == str(snapshot) and reranker.name == "BAAI/bge-reranker-base"
    assert "found locally" in caplog.text
    scores = reranker.score(QUERY, PASSAGES[:3])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)


# ---- lookup --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["none", "off", "", "None"])
def test_none_turns_reranking_off(spec):
    assert resolve_reranker(spec) is None


def test_auto_without_models_logs_one_line_and_returns_none(clean_env, caplog):
    with caplog.at_level(logging.INFO, logger="rag.adapters.rerankers"):
        assert resolve_reranker("auto") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("no reranker model found locally (looked in ")
    assert str(clean_env / "hf" / "hub") in lines[0] and lines[0].endswith("reranking is off")


def test_incomplete_hub_download_is_ignored(fake_dir, clean_env, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((fake_dir / "config.json").read_text())
    (broken / "model.safetensors").symlink_to(tmp_path / "blob-never-downloaded")
    _fake_hub_entry(clean_env / "hf" / "hub", "BAAI/bge-reranker-v2-m3", broken)
    assert resolve_reranker("auto") is None
    with pytest.raises(ModelError, match="not found locally"):
        resolve_reranker("BAAI/bge-reranker-v2-m3")


def test_models_dir_and_preference_order(fake_dir, clean_env, monkeypatch):
    models_dir = clean_env / "models"
    models_dir.mkdir()
    (models_dir / "bge-reranker-large").symlink_to(fake_dir, target_is_directory=True)
    _fake_hub_entry(clean_env / "hf" / "hub", "BAAI/bge-reranker-v2-m3", fake_dir)
    monkeypatch.setenv("RAG_MODELS_DIR", str(models_dir))
    reranker = resolve_reranker("auto", device="cpu")
    assert reranker.name == "BAAI/bge-reranker-v2-m3"  # v2-m3 is preferred wherever it is
    named = resolve_reranker("bge-reranker-large", device="cpu")
    assert named.model_ref == str(models_dir / "bge-reranker-large")
    by_org = resolve_reranker("BAAI/bge-reranker-large", device="cpu")
    assert by_org.model_ref == str(models_dir / "bge-reranker-large")


def test_backend_choice(fake_dir, tmp_path, monkeypatch):
    import rag.adapters.rerankers as rr

    # on CPU a bge-style model runs through CrossEncoder (no FlagEmbedding trial batch), on CUDA through FlagReranker
    assert isinstance(resolve_reranker(str(fake_dir), device="cpu"), CrossEncoderAdapter)
    monkeypatch.setattr(rr, "resolve_device", lambda spec: "cuda")
    assert isinstance(resolve_reranker(str(fake_dir), device="auto"), FlagRerankerAdapter)
    assert isinstance(resolve_reranker(str(fake_dir), backend="cross-encoder"), CrossEncoderAdapter)
    # a directory saved by sentence-transformers always runs through CrossEncoder
    st_dir = tmp_path / "ms-marco-MiniLM-L6-v2"
    st_dir.mkdir()
    for file in fake_dir.iterdir():
        (st_dir / file.name).symlink_to(file)
    (st_dir / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "CrossEncoder"}))
    assert isinstance(resolve_reranker(str(st_dir)), CrossEncoderAdapter)
    assert isinstance(resolve_reranker(str(st_dir), backend="flag"), FlagRerankerAdapter)
    with pytest.raises(ConfigError, match="unknown reranker backend 'onnx'"):
        resolve_reranker(str(fake_dir), backend="onnx")


def test_unknown_name_is_a_model_error_naming_where_it_looked(clean_env):
    with pytest.raises(ModelError) as info:
        resolve_reranker("BAAI/bge-reranker-v2-m3")
    message = info.value.message
    assert "'BAAI/bge-reranker-v2-m3' not found locally" in message
    assert str(clean_env / "home" / ".rag" / "models") in message and str(clean_env / "hf" / "hub") in message


def test_path_without_weights_and_llm_rerankers_are_rejected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_reranker(str(empty))
    gemma = tmp_path / "bge-reranker-v2-gemma"
    gemma.mkdir()
    (gemma / "config.json").write_text(json.dumps({"architectures": ["GemmaForCausalLM"]}))
    (gemma / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError, match="not an encoder cross-encoder"):
        resolve_reranker(str(gemma))


def test_display_name():
    assert display_name(Path("/c/hub/models--BAAI--bge-reranker-base/snapshots/abc")) == "BAAI/bge-reranker-base"
    assert display_name(Path("/models/bge-reranker-large")) == "bge-reranker-large"


# ---- device --------------------------------------------------------------------------------

def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_bad_batch_arguments():
    with pytest.raises(ModelError, match="max_length"):
        FlagRerankerAdapter("x", max_length=4)
    with pytest.raises(ModelError, match="batch_size"):
        CrossEncoderAdapter("x", batch_size=0)
