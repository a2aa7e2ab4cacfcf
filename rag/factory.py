"""The one place that wires adapters and stages from settings. Everything here is lazy: building
`Services` opens nothing and loads no model; each collaborator is built on first use, once.

Any collaborator may be given instead of built: `Services(settings, embedder=..., store=...)`,
`build_services(settings, llm=...)`, or `services.with_(reranker=None)` for a copy with some
replaced. `reranker=None` means "no reranker"; a name left out (or `UNSET`) is built from settings."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.answering import AnswerConfig, Answerer
from rag.catalog import Catalog
from rag.checking import AnswerChecker, CheckConfig
from rag.citations import CitationVerifier
from rag.context_builder import ContextConfig, ContextBuilder
from rag.generation import Layout
from rag.kb import KnowledgeBases
from rag.db import Database
from rag.locks import write_locks
from rag.models import ModelLocator
from rag.names import BM25, DENSE
from rag.pipeline import Pipeline, PipelineConfig
from rag.protocols import LLM, CollectionOptions, Embedder, Reranker, VectorStore
from rag.rerank import RerankStage
from rag.retrieval import HybridRetriever
from rag.retrieval_stage import RetrievalConfig, RetrievalStage
from rag.settings import Settings, load_settings
from rag.strategies import StrategyConfig
from rag.transforms import QueryTransformer
from rag.version_stage import VersionStage

log = logging.getLogger(__name__)


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET  # "build it from settings" (None is a value: no reranker)
GIVABLE = ("catalog", "store", "embedder", "reranker", "llm")


class Services:
    """The collaborators of one process, built from `settings` on first use. `embedder` is the
    model: it is still wrapped for micro-batching when `batch_queries` is on."""

    def __init__(self, settings: Settings, *, catalog: Catalog | _Unset = UNSET, store: VectorStore | _Unset = UNSET,
                 embedder: Embedder | _Unset = UNSET, reranker: Reranker | None | _Unset = UNSET,
                 llm: LLM | _Unset = UNSET) -> None:
        self.settings = settings
        given = {"catalog": catalog, "store": store, "embedder": embedder, "reranker": reranker, "llm": llm}
        self._given: dict[str, Any] = {k: v for k, v in given.items() if v is not UNSET}
        for name in ("catalog", "store", "embedder", "llm"):  # only the reranker may be None
            if name in self._given and self._given[name] is None:
                raise ValueError(f"{name}=None: give one, or leave it out to build it from settings")

    def with_(self, **changes: Any) -> Services:
        """A new Services with the same settings (or `settings=...`) and given collaborators, some
        replaced or added (`UNSET` removes one: built from settings again). Nothing built by this
        one is shared: close it if it opened a store."""
        settings = changes.pop("settings", self.settings)
        unknown = set(changes) - set(GIVABLE)
        if unknown:
            raise TypeError(f"unknown collaborator(s) {sorted(unknown)}; choose from {list(GIVABLE)}")
        return Services(settings, **{**self._given, **changes})

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @cached_property
    def catalog(self) -> Catalog:
        if "catalog" in self._given:
            return self._given["catalog"]
        return Catalog(self.database("catalog"))

    @property
    def catalog_url(self) -> str | None:
        """The PostgreSQL catalog's URL (RAG_CATALOG_URL), or None for the SQLite files in data_dir."""
        return self.settings.catalog_url

    def database(self, name: str) -> Database:
        """The database of one store (`catalog`, `api_keys`, `conversations`, `jobs`):
        `<data_dir>/<name>.sqlite`, or the PostgreSQL catalog that every store shares, with a pool of
        up to RAG_PG_POOL_SIZE connections."""
        return Database(self.catalog_url or self.data_dir / f"{name}.sqlite", pool_size=self.settings.pg_pool_size)

    @cached_property
    def model_locator(self) -> ModelLocator:
        """Where every model kind is looked up: `models_dirs`, ~/.rag/models, the hub cache."""
        return ModelLocator.from_dirs(self.settings.models_dirs)

    @cached_property
    def embedder_resolution(self):
        if "embedder" in self._given:
            from rag.adapters.embedders import Resolution

            given = self._given["embedder"]
            return Resolution(given, f"{given.name} (given)")
        s = self.settings
        if s.embed_base_url:
            from rag.adapters.embedders import Resolution
            from rag.adapters.model_servers import RemoteEmbedder

            remote = RemoteEmbedder(s.embed_base_url, s.embed_model, api=s.embed_api,
                                    api_key=Settings.secret(s.embed_api_key), batch_size=s.embed_batch_size,
                                    timeout=s.embed_timeout, retries=s.embed_retries, dim=s.embed_dim)
            return Resolution(remote, f"{remote.name} served by {remote.server.shown} ({s.embed_api} API)")
        from rag.adapters.embedders import resolve_embedder

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
    def store(self) -> VectorStore:
        if "store" in self._given:
            return self._given["store"]
        s = self.settings
        backend = s.resolved_vector_backend
        if backend == "edge":
            from rag.adapters.edge_store import EdgeStore

            return EdgeStore(self.data_dir / "vectors-edge", hnsw_m=s.hnsw_m, hnsw_ef_construct=s.hnsw_ef_construct,
                             hnsw_ef=s.hnsw_ef)
        if backend == "pgvector":
            from rag.adapters.pgvector_store import PgVectorStore

            return PgVectorStore(s.resolved_pgvector_url, hnsw_m=s.hnsw_m, hnsw_ef_construct=s.hnsw_ef_construct,
                                 hnsw_ef=s.hnsw_ef, pool_size=s.pg_pool_size)
        from rag.adapters.qdrant_store import QdrantClientStore

        if backend == "local":
            return QdrantClientStore.local(self.data_dir / "vectors-qdrant")
        return QdrantClientStore.server(s.qdrant_url, api_key=Settings.secret(s.qdrant_api_key), hnsw_ef=s.hnsw_ef)

    def collection_options(self) -> CollectionOptions:
        """How new collections are created: the server's options from settings (the embedded
        engines and pgvector take theirs at construction), sparse vectors when BM25 lives in the
        vector store (Qdrant or pgvector)."""
        s = self.settings
        sparse = s.resolved_lexical_backend in ("sparse", "pgvector")
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
        if s.resolved_lexical_backend == "pgvector":
            from rag.adapters.pgvector_lexical import PgSparseIndex

            return PgSparseIndex(self.store, collection, stopwords=s.bm25_stopwords)
        from rag.adapters.bm25 import LocalBM25Index

        return LocalBM25Index(self.data_dir / "bm25" / collection, stopwords=s.bm25_stopwords)

    def lexical_names(self) -> list[str]:
        """The local BM25 indexes on disk, by collection (none when BM25 lives in the vector store)."""
        if self.settings.resolved_lexical_backend != "local":
            return []
        from rag.adapters.bm25 import index_names

        return index_names(self.data_dir / "bm25")

    @cached_property
    def kbs(self) -> KnowledgeBases:
        # a Qdrant server (or a PostgreSQL database other deployments share) may hold other applications'
        # collections: only `<kb>__v<n>` ones are orphans there
        # the store and the embedder are built on first use: `kbs.writing` opens no store, loads no model
        return KnowledgeBases(self.catalog, lambda: self.store, self.lexical_factory, lambda: self.embedder,
                              self.collection_options(), locks=write_locks(self.data_dir / "locks", self.catalog_url),
                              lexical_names=self.lexical_names,
                              own_store=self.settings.resolved_vector_backend not in ("server", "pgvector"))

    @cached_property
    def reranker(self):
        if "reranker" in self._given:
            return self._given["reranker"]
        s = self.settings
        if s.rerank_base_url:
            from rag.adapters.model_servers import RemoteReranker

            reranker = RemoteReranker(s.rerank_base_url, s.rerank_model, api=s.rerank_api,
                                      api_key=Settings.secret(s.rerank_api_key), batch_size=s.rerank_batch_size,
                                      timeout=s.rerank_timeout, retries=s.rerank_retries)
        else:
            from rag.adapters.rerankers import resolve_reranker

            reranker = resolve_reranker(s.rerank_model, max_length=s.rerank_max_length,
                                        batch_size=s.rerank_batch_size, device=s.embed_device,
                                        locator=self.model_locator)
        if reranker is None or not s.batch_queries:
            return reranker
        from rag.batching import BatchingReranker

        return BatchingReranker(reranker, max_items=s.batch_max_pairs, max_wait=s.batch_wait_ms / 1000)

    @cached_property
    def llm(self):
        if "llm" in self._given:
            return self._given["llm"]
        from rag.adapters.llm import make_llm

        s = self.settings
        return make_llm(s.llm_base_url, s.llm_model, Settings.secret(s.llm_api_key), s.llm_timeout, s.llm_gguf_path,
                        s.llm_context_window, s.llm_threads, local_model=s.llm_local_model, device=s.llm_device,
                        embedded=s.llm_embedded)

    # -- the query pipeline: every stage built once from settings --------------------------------
    @cached_property
    def rerank_stage(self) -> RerankStage | None:
        """The reranking stage over `reranker` (None without one). Resolving the reranker may raise."""
        reranker = self.reranker
        if reranker is None:
            return None
        s = self.settings
        return RerankStage(reranker, candidates=s.rerank_candidates, min_score=s.rerank_min_score)

    @cached_property
    def citation_verifier(self) -> CitationVerifier:
        return CitationVerifier(self.embedder, self.settings.citation_min_support)

    @cached_property
    def pipeline(self) -> Pipeline:
        """The answering pipeline, wired from settings; it resolves models through this object on
        first use (nothing loads here)."""
        s = self.settings
        layout = Layout(s.question_first, s.context_best_last)
        checker = AnswerChecker(CheckConfig(s.refuse_min_score, s.verify_citations, s.refuse_unsupported,
                                            s.answer_check, s.answer_min_coverage), lambda: self.citation_verifier)
        # partial (map) answers no source supports are dropped when unsupported answers are refused
        grounded = checker.grounded if s.verify_citations and s.refuse_unsupported else None
        # map_rerank ranks its candidates by the verifier's support; auto picks per embedded model (None: another)
        support = checker.support if s.verify_citations else None
        embedded = s.llm_embedded if not (s.llm_base_url or s.llm_local_model or s.llm_gguf_path) else None
        retrieval = RetrievalStage(
            kbs=lambda: self.kbs, rerank=lambda: self.rerank_stage,
            transformer=QueryTransformer(lambda: self.llm, multi_query_n=s.multi_query_n),
            retriever=HybridRetriever(top_k=s.top_k, rrf_k=s.rrf_k,
                                      weights={DENSE: s.dense_weight, BM25: s.bm25_weight}, fusion=s.fusion,
                                      fusion_alpha=s.fusion_alpha),
            versions=VersionStage(s.version_min_overlap),
            config=RetrievalConfig(tuple(s.transforms), s.context_top_n, s.original_query_weight,
                                   s.prefer_latest_version))
        return Pipeline(
            kbs=lambda: self.kbs, llm=lambda: self.llm, retrieval=retrieval,
            context=ContextBuilder(ContextConfig(
                s.context_top_n, s.llm_context_window, s.llm_max_tokens, s.context_dedupe, s.match_years,
                s.context_focus, s.context_focus_tokens, s.context_about, s.answer_min_coverage, layout)),
            answerer=Answerer(lambda: self.llm, AnswerConfig(StrategyConfig(
                s.llm_max_tokens, s.llm_temperature, s.strategy_group_sources, s.strategy_parallel, grounded, layout,
                support=support, model=embedded))),
            checker=checker,
            config=PipelineConfig(strategy=s.strategy, strategy_sources=s.strategy_sources,
                                  collection_questions=s.collection_questions))

    def close(self) -> None:
        """Close the store, the catalog and the lexical indexes this object opened (given ones
        stay the caller's)."""
        if "kbs" in self.__dict__:
            self.__dict__["kbs"].close()
        for name in ("store", "catalog"):
            if name in self.__dict__ and name not in self._given:
                self.__dict__[name].close()


@contextmanager
def open_services(settings: Settings | None = None, **given: Any) -> Iterator[Services]:
    """`build_services` for one command: the stores and the catalog are closed on the way out, so the
    next command (in this process or another) can open them at once."""
    services = build_services(settings if settings is not None else load_settings(), **given)
    try:
        yield services
    finally:
        services.close()


def build_services(settings: Settings, **given: Any) -> Services:
    """Services over `settings`; `given` collaborators (catalog, store, embedder, reranker, llm)
    are used instead of built."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Services(settings, **given)
