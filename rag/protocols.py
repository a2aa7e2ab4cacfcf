"""One small protocol per stage kind. Implementations live in `rag/adapters/`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rag.types import Chunk, Filter, ScoredId


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, batch first."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class VectorStore(Protocol):
    """Dense vectors plus chunk payloads, one collection per knowledge base."""

    def ensure_collection(self, name: str, dim: int) -> None: ...

    def collection_exists(self, name: str) -> bool: ...

    def drop_collection(self, name: str) -> None: ...

    def upsert(self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...

    def delete(self, name: str, chunk_ids: Sequence[str]) -> None: ...

    def search(self, name: str, vector: np.ndarray, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def ids(self, name: str) -> set[str]: ...

    def count(self, name: str) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class LexicalIndex(Protocol):
    """BM25 over the same chunk ids as the vector store."""

    def add(self, chunks: Sequence[Chunk]) -> None: ...

    def delete(self, chunk_ids: Sequence[str]) -> None: ...

    def search(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def ids(self) -> set[str]: ...


@runtime_checkable
class Reranker(Protocol):
    """Cross-encoder relevance of (query, passage) pairs, normalised to 0..1."""

    @property
    def name(self) -> str: ...

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...


@runtime_checkable
class LLM(Protocol):
    """A chat model behind an OpenAI-compatible interface."""

    @property
    def name(self) -> str: ...

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
             stop: list[str] | None = None) -> str: ...

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
               stop: list[str] | None = None) -> Iterator[str]: ...

    def info(self) -> dict[str, Any]: ...
