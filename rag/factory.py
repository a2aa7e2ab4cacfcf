"""The one place that wires adapters from settings. Everything here is lazy: building `Services`
opens the catalog and the store but loads no model until something needs it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.catalog import Catalog
from rag.kb import KnowledgeBases
from rag.models import ModelLocator
from rag.protocols import CollectionOptions
from rag.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    embedder_override: Any = None  # tests and tools may pass an Embedder instance
    llm_override: Any = None
    reranker_override: Any = "unset"
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.data_dir / "catalog.sqlite")

    @cached_property
    def model_locator(self) -> ModelLocator:
        """Where every model kind is looked up: `models_dirs`, ~/.rag/models, the hub cache."""
        return ModelLocator.from_dirs(self.settings.models_dirs)

    @cached_property
    def embedder_resolution(self):
        if self.embedder_override is not None:
            from rag.adapters.embedders import Resolution

            return Resolution(self.embedder_override, f"{self.embedder_override.name} (given)")
        from rag.adapters.embedders import resolve_embedder

        s = self.settings
        return resolve_embedder(s.embed_model, batch_size=s.embed_batch_size, device=s.embed_device,
                                max_length=s.embed_max_length, locator=self.model_locator)

    @cached_property
    def embedder(self):
        """The resolved embedder; with `batch_queries` (the default) concurrent query embeddings
        share one model call (`rag.batching`)."""
        inner = self.embedder_resolution.embedder
        s = self.settings
        if not s.batch_queries:
            return inner
        from rag.batching import BatchingEmbedder

        return BatchingEmbedder(inner, max_items=s.batch_max_queries, max_wait=s.batch_wait_ms / 1000)

    @cached_property
    def store(self):
        s = self.settings
        backend = s.resolved_vector_backend
        if backend == "edge":
            from rag.adapters.edge_store import EdgeStore

            return EdgeStore(self.data_dir / "vectors-edge", hnsw_m=s.hnsw_m, hnsw_ef_construct=s.hnsw_ef_construct,
                             hnsw_ef=s.hnsw_ef)
        from rag.adapters.qdrant_store import QdrantClientStore

        if backend == "local":
            return QdrantClientStore.local(self.data_dir / "vectors-qdrant")
        return QdrantClientStore.server(s.qdrant_url, api_key=Settings.secret(s.qdrant_api_key), hnsw_ef=s.hnsw_ef)

    def collection_options(self) -> CollectionOptions:
        """How new collections are created: the server's options from settings (the embedded
        engines take theirs at construction), sparse vectors when BM25 lives in Qdrant."""
        s = self.settings
        sparse = s.resolved_lexical_backend == "sparse"
        if s.resolved_vector_backend != "server":
            return CollectionOptions(sparse=sparse)
        return CollectionOptions(sparse=sparse, hnsw_m=s.hnsw_m, hnsw_ef_construct=s.hnsw_ef_construct,
                                 on_disk_vectors=s.on_disk_vectors, on_disk_payload=s.on_disk_payload,
                                 scalar_quantization=s.scalar_quantization, shard_number=s.shard_number,
                                 replication_factor=s.replication_factor)

    def lexical_factory(self, collection: str):
        s = self.settings
        if s.resolved_lexical_backend == "sparse":
            from rag.adapters.sparse_lexical import QdrantSparseIndex

            return QdrantSparseIndex(self.store, collection, stopwords=s.bm25_stopwords)
        from rag.adapters.bm25 import LocalBM25Index

        return LocalBM25Index(self.data_dir / "bm25" / collection, stopwords=s.bm25_stopwords)

    @cached_property
    def kbs(self) -> KnowledgeBases:
        return KnowledgeBases(self.catalog, self.store, self.lexical_factory, self.embedder,
                              self.collection_options())

    @cached_property
    def reranker(self):
        if self.reranker_override != "unset":
            return self.reranker_override
        from rag.adapters.rerankers import resolve_reranker

        s = self.settings
        reranker = resolve_reranker(s.rerank_model, max_length=s.rerank_max_length, batch_size=s.rerank_batch_size,
                                    device=s.embed_device, locator=self.model_locator)
        if reranker is None or not s.batch_queries:
            return reranker
        from rag.batching import BatchingReranker

        return BatchingReranker(reranker, max_items=s.batch_max_pairs, max_wait=s.batch_wait_ms / 1000)

    @cached_property
    def llm(self):
        if self.llm_override is not None:
            return self.llm_override
        from rag.adapters.llm import make_llm

        s = self.settings
        return make_llm(s.llm_base_url, s.llm_model, Settings.secret(s.llm_api_key), s.llm_timeout, s.llm_gguf_path,
                        s.llm_context_window, s.llm_threads)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
        if "catalog" in self.__dict__:
            self.catalog.close()


@contextmanager
def open_services(settings: Settings | None = None, **overrides: Any) -> Iterator[Services]:
    """`build_services` for one command: the stores and the catalog are closed on the way out, so the
    next command (in this process or another) can open them at once."""
    services = build_services(settings if settings is not None else load_settings(), **overrides)
    try:
        yield services
    finally:
        services.close()


def build_services(settings: Settings, **overrides: Any) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Services(settings, **overrides)
