"""Cross-encoder rerankers behind the `Reranker` protocol, scores in 0..1.

- `FlagRerankerAdapter`: FlagEmbedding's reranker (bge-reranker-base/large/v2-m3), sigmoid-normalised.
- `CrossEncoderAdapter`: a sentence-transformers CrossEncoder; raw logits through a sigmoid (one
  label) or a softmax (two labels, the "relevant" column), whatever activation the model saved.
- `resolve_reranker(spec)`: "none" -> None; "auto" -> a bge reranker found locally, else None;
  a name or path -> that model, found locally or ModelError. Never downloads. On CPU it runs bge
  rerankers through CrossEncoder (same scores, no FlagEmbedding trial batch); on CUDA through
  FlagReranker with fp16.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.adapters.device import check_device, resolve_device
from rag.errors import ConfigError, ModelError
from rag.models import ModelLocator, has_weights

log = logging.getLogger(__name__)

AUTO_RERANKERS = ("bge-reranker-v2-m3", "bge-reranker-large", "bge-reranker-base")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"reranker model {path} has no readable config.json: {exc}") from exc


def _check_cross_encoder(path: Path) -> dict[str, Any]:
    config = _read_config(path)
    archs = config.get("architectures") or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(f"{path} is not an encoder cross-encoder (architectures {archs}); use a reranker such as "
                         "bge-reranker-v2-m3 (LLM-based rerankers are not supported)")
    return config


def display_name(path: Path) -> str:
    """"BAAI/bge-reranker-base" for a hub-cache snapshot, the directory name otherwise."""
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part[len("models--"):].replace("--", "/")
    return path.name


class _LazyReranker(ABC):
    """Shared part: keep arguments, load once under a lock, score an empty list without loading."""

    def __init__(self, model_name_or_path: str | Path, max_length: int, batch_size: int, device: str,
                 name: str | None = None) -> None:
        if max_length < 16:
            raise ModelError(f"reranker max_length must be >= 16, got {max_length}")
        if batch_size < 1:
            raise ModelError(f"reranker batch_size must be >= 1, got {batch_size}")
        self.model_ref = str(model_name_or_path)
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self._name = name or display_name(Path(self.model_ref))
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def _path(self) -> str:
        path = Path(self.model_ref).expanduser()
        if not has_weights(path):
            raise ModelError(f"reranker model {self.model_ref!r} is not a local model directory with config.json "
                             "and weights (use resolve_reranker() to look a name up locally)")
        _check_cross_encoder(path)
        return str(path)

    @abstractmethod
    def _load(self, path: str, device: str) -> Any:
        """Build the model in directory `path` on `device` (called once, under the lock)."""

    @abstractmethod
    def _scores(self, pairs: list[list[str]]) -> list[float]:
        """Scores in 0..1 for (query, passage) pairs, in order."""

    def warm_up(self) -> None:
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._model is None:
            path = self._path()
            device = resolve_device(self.device)
            try:
                self._model = self._load(path, device)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ModelError(f"cannot load reranker {self.model_ref}: {exc}") from exc
            log.info("loaded reranker %s on %s", self.model_ref, device)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores in 0..1 for (query, passage) pairs of possibly different queries, in order (what
        `rag.batching.BatchingReranker` uses to score concurrent queries together)."""
        if not pairs:
            return []
        with self._lock:
            self._ensure_loaded()
            scores = self._scores([[q, p] for q, p in pairs])
        if len(scores) != len(pairs):
            raise ModelError(f"reranker {self.name} returned {len(scores)} scores for {len(pairs)} pairs")
        return [min(1.0, max(0.0, float(s))) for s in scores]


class FlagRerankerAdapter(_LazyReranker):
    """FlagEmbedding `FlagReranker`, `compute_score(normalize=True)`. fp16 only on CUDA
    (`use_fp16=None`: on when the device is CUDA)."""

    def __init__(self, model_name_or_path: str | Path, max_length: int = 256, batch_size: int = 16,
                 device: str = "auto", use_fp16: bool | None = None, name: str | None = None) -> None:
        super().__init__(model_name_or_path, max_length, batch_size, device, name)
        self.use_fp16 = use_fp16

    def _load(self, path: str, device: str) -> Any:
        try:
            from FlagEmbedding import FlagReranker
        except ImportError as exc:
            raise ModelError("the bge reranker needs `pip install FlagEmbedding==1.4.2`") from exc
        fp16 = device.startswith("cuda") and self.use_fp16 is not False
        # one explicit device: FlagEmbedding would otherwise start a process pool over all GPUs
        return FlagReranker(path, use_fp16=fp16, devices=[device], batch_size=self.batch_size,
                            max_length=self.max_length, normalize=True)

    def _scores(self, pairs: list[list[str]]) -> list[float]:
        scores = self._model.compute_score(pairs, normalize=True, batch_size=self.batch_size,
                                           max_length=self.max_length)
        return [float(s) for s in (scores if isinstance(scores, (list, tuple)) else [scores])]


class CrossEncoderAdapter(_LazyReranker):
    """sentence-transformers `CrossEncoder`. Logits are taken raw (Identity activation) and mapped
    to 0..1 here, so a model saved with or without a sigmoid scores the same way."""

    def __init__(self, model_name_or_path: str | Path, max_length: int = 256, batch_size: int = 16,
                 device: str = "auto", name: str | None = None) -> None:
        super().__init__(model_name_or_path, max_length, batch_size, device, name)

    def _load(self, path: str, device: str) -> Any:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise ModelError("the cross-encoder reranker needs `pip install sentence-transformers`") from exc
        model = CrossEncoder(path, device=device, max_length=self.max_length, local_files_only=True)
        if model.num_labels not in (1, 2):
            raise ModelError(f"cross-encoder {self.model_ref} has {model.num_labels} labels; a reranker needs 1 "
                             "(relevance logit) or 2 (not relevant / relevant)")
        return model

    def _scores(self, pairs: list[list[str]]) -> list[float]:
        import torch

        logits = self._model.predict(pairs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(),
                                     convert_to_numpy=True, show_progress_bar=False)
        if self._model.num_labels == 1:
            return [_sigmoid(float(x)) for x in logits.reshape(-1)]
        return [float(p) for p in torch.softmax(torch.as_tensor(logits), dim=-1)[:, 1]]


BACKENDS = ("auto", "flag", "cross-encoder")


def _adapter_for(path: Path, max_length: int, batch_size: int, device: str, backend: str,
                 name: str | None = None) -> _LazyReranker:
    """Which library runs the model. "auto": a directory saved by sentence-transformers -> CrossEncoder;
    otherwise FlagReranker on CUDA (fp16) and CrossEncoder on CPU. Both give sigmoid(logit) for the
    same model, but FlagEmbedding's `compute_score` runs one extra trial batch per call (to probe for
    out-of-memory), which on CPU costs up to 2x for the usual 20 candidates."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown reranker backend {backend!r}; use one of {list(BACKENDS)}", field="backend")
    config = _check_cross_encoder(path)
    if backend == "auto":
        is_st = (path / "config_sentence_transformers.json").is_file() or "sentence_transformers" in config
        backend = "cross-encoder" if is_st or not resolve_device(device).startswith("cuda") else "flag"
    if backend == "cross-encoder":
        return CrossEncoderAdapter(path, max_length=max_length, batch_size=batch_size, device=device, name=name)
    return FlagRerankerAdapter(path, max_length=max_length, batch_size=batch_size, device=device, name=name)


def resolve_reranker(spec: str = "auto", max_length: int = 256, batch_size: int = 16, device: str = "auto", *,
                     backend: str = "auto", locator: ModelLocator | None = None) -> _LazyReranker | None:
    """The reranker for a setting value, without loading it and without any network call.

    "none"/"off"/"" -> None. "auto" -> the first of AUTO_RERANKERS that `locator` finds (default:
    RAG_MODELS_DIR, ~/.rag/models and the Hugging Face cache), else None (one INFO line). A path or
    a name ("BAAI/bge-reranker-v2-m3", "bge-reranker-base") -> that model or ModelError.
    `backend` ("auto", "flag", "cross-encoder") picks the library; see `_adapter_for`.
    """
    key = (spec or "").strip()
    if key.lower() in ("", "none", "off", "false", "0"):
        return None
    check_device(device)
    locator = locator or ModelLocator.from_dirs()
    if key.lower() == "auto":
        for short in AUTO_RERANKERS:
            path = locator.find(short, default_org="BAAI")
            if path is not None:
                log.info("reranker: %s found locally at %s", short, path)
                return _adapter_for(path, max_length, batch_size, device, backend, name=f"BAAI/{short}")
        log.info("no reranker model found locally (looked in %s); reranking is off", locator.places())
        return None
    path = Path(key).expanduser()
    if path.exists():
        if not has_weights(path):
            raise ModelError(f"reranker path {path} has no config.json with model weights")
        return _adapter_for(path, max_length, batch_size, device, backend)
    org, _, short = key.rpartition("/")
    found = locator.find(key)
    if found is None:
        raise ModelError(f"reranker model {key!r} not found locally (looked in {locator.places()}); "
                         f"download it (e.g. `huggingface-cli download {key if org else 'BAAI/' + short}`) or give a "
                         "local path, or set the reranker to 'none'")
    return _adapter_for(found, max_length, batch_size, device, backend, name=key)
