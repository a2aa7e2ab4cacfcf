"""One small protocol per stage kind: every method the core calls on a stage is declared here, and
every implementation runs through that protocol's contract suite (`tests/contract/`). Implementations
live in `rag/adapters/` (and `rag/testing.py` for the deterministic fakes).

Models load lazily: constructing a stage is cheap, `warm_up()` loads its model (idempotent, the
server calls it at start so that `/readyz` is honest), and the first real call loads it otherwise."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rag.llm_timing import TokenUsage
from rag.types import Chunk, Filter, ScoredId


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, batch first. `dim` never loads the model
    (it comes from the model's config or is known); `warm_up()` does."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def warm_up(self) -> None: ...


@dataclass(frozen=True)
class CollectionOptions:
    """How a collection is created. None leaves the store's own default (server only: HNSW,
    on-disk storage, int8 quantization, shards, replicas; the embedded engines ignore shards and
    replicas). `sparse` adds the `bm25` sparse vector that `QdrantSparseIndex` writes."""

    sparse: bool = False
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None
    on_disk_vectors: bool | None = None
    on_disk_payload: bool | None = None
    scalar_quantization: bool | None = None
    shard_number: int | None = None
    replication_factor: int | None = None


RECOVERY_ACTIONS = ("none", "reopened", "rebuilt")


@dataclass(frozen=True)
class RecoveryReport:
    """What `VectorStore.recover` found and did with one collection. `action`, one of
    RECOVERY_ACTIONS: "none" (it opened, read back and needed nothing), "reopened" (closed and
    loaded again: its log replayed what a failed flush left unwritten) or "rebuilt" (what could be
    read was copied into a fresh collection). `lost` points could not be read back (their chunks
    are missing from the store, where `KnowledgeBase.check` reports them); `lost_segments` did not
    load at all (their points are not counted); the damaged files were kept at `kept`."""

    collection: str
    action: str = "none"
    recovered: int = 0
    lost: int = 0
    lost_segments: tuple[str, ...] = ()
    kept: str = ""
    reason: str = ""

    @property
    def message(self) -> str:
        if self.action == "none":
            return f"collection {self.collection!r}: nothing to recover"
        text = f"collection {self.collection!r} {self.action} ({self.reason}): {self.recovered} points recovered"
        if self.lost or self.lost_segments:
            text += f", {self.lost} lost" + (f" and {len(self.lost_segments)} unreadable segment(s)"
                                              if self.lost_segments else "")
        return text + (f"; the damaged files are kept in {self.kept}" if self.kept else "")


@runtime_checkable
class VectorStore(Protocol):
    """Dense vectors plus chunk payloads, one collection per knowledge base."""

    def ensure_collection(self, name: str, dim: int, options: CollectionOptions | None = None) -> None: ...

    def collection_exists(self, name: str) -> bool: ...

    def collections(self) -> list[str]:
        """The names of the collections the store holds, sorted (orphan checks compare them with
        the catalog)."""
        ...

    def drop_collection(self, name: str) -> None: ...

    def upsert(self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...

    def delete(self, name: str, chunk_ids: Sequence[str]) -> None: ...

    def search(self, name: str, vector: np.ndarray, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def ids(self, name: str) -> set[str]: ...

    def get_payloads(self, name: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the chunks that exist, keyed by chunk id (missing ids are left out)."""
        ...

    def count(self, name: str) -> int: ...

    def optimize(self, name: str, min_unindexed: int = 0) -> bool:
        """Build the search index (HNSW) of the vectors outside it when there are at least
        `min_unindexed`; True if anything changed. A store that indexes by itself does nothing."""
        ...

    def recover(self, name: str) -> RecoveryReport:
        """Check that collection `name` opens, reads back whole and takes writes; when it does not,
        bring it back (reopen it, or rebuild it from what is readable) and say what was lost. A
        store that recovers by itself (Qdrant server) returns action "none"."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SparseVectorStore(VectorStore, Protocol):
    """A qdrant-client store whose collections also hold the `bm25` sparse vectors, what
    `QdrantSparseIndex` writes through: the client itself, the store's guard (its lock in local mode,
    API errors as StoreError) and a sparse search."""

    @property
    def client(self) -> Any: ...

    def guard(self, what: str) -> AbstractContextManager[None]: ...

    def search_sparse(self, name: str, indices: Sequence[int], values: Sequence[float], limit: int,
                      flt: Filter | None = None) -> list[ScoredId]: ...


@runtime_checkable
class LexicalIndex(Protocol):
    """BM25 over the same chunk ids as the vector store (one index per collection)."""

    @property
    def stale(self) -> bool:
        """True when the index was written by an older tokenizer: `rebuild` it before use."""
        ...

    def add(self, chunks: Sequence[Chunk]) -> None: ...

    def delete(self, chunk_ids: Sequence[str]) -> None: ...

    def replace(self, delete_ids: Sequence[str], add_chunks: Sequence[Chunk]) -> None:
        """Delete some chunks and add others (a re-ingested document); idempotent."""
        ...

    def rebuild(self, chunks: Sequence[Chunk]) -> None:
        """Replace the whole index by `chunks`, tokenised afresh."""
        ...

    def drop(self) -> None:
        """Remove everything this index holds."""
        ...

    def search(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def ids(self) -> set[str]: ...

    def close(self) -> None: ...


@runtime_checkable
class Reranker(Protocol):
    """Cross-encoder relevance of (query, passage) pairs, normalised to 0..1."""

    @property
    def name(self) -> str: ...

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...

    def warm_up(self) -> None: ...


@runtime_checkable
class PairReranker(Reranker, Protocol):
    """A reranker that also scores (query, passage) pairs of different queries in one call, what
    `rag.batching.BatchingReranker` needs to score concurrent queries together."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


@runtime_checkable
class LLM(Protocol):
    """A chat model behind an OpenAI-compatible interface. `stream` fills `usage` (when given) with
    the token counts its runtime reports, by the time the iterator is exhausted; a runtime that
    reports none leaves it as it is (`rag.llm_timing` then estimates)."""

    @property
    def name(self) -> str: ...

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
             stop: list[str] | None = None) -> str: ...

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
               stop: list[str] | None = None, usage: TokenUsage | None = None) -> Iterator[str]: ...

    def info(self) -> dict[str, Any]: ...

    def warm_up(self) -> None: ...
