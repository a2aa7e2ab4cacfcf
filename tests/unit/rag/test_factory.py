"""The factory: collaborators given instead of built (`Services(..., store=...)`, `with_`), the
pipeline wired once from settings, and nothing resolved before a query needs it."""

from __future__ import annotations

import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.adapters.qdrant_store import QdrantClientStore
from rag.factory import UNSET, Services, build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.kb_fixtures import KB, OverlapReranker
from tests.unit.kb_fixtures import build_services as kb_services


def settings(tmp_path, **values) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="local", lexical_backend="local",
                    **values)


def test_given_collaborators_are_used_and_stay_the_callers_to_close(tmp_path):
    store, embedder, llm = QdrantClientStore.memory(), HashEmbedder(dim=8), ScriptedLLM(default="ok")
    services = build_services(settings(tmp_path, batch_queries=False), store=store, embedder=embedder, llm=llm,
                              reranker=None)
    assert services.store is store and services.embedder is embedder and services.llm is llm
    assert services.reranker is None and services.rerank_stage is None  # None: no reranker
    services.kbs.open_or_create("notes")
    services.close()
    assert store.collection_exists("notes")  # the given store is still open


def test_none_is_refused_where_it_means_nothing_and_unknown_names_fail(tmp_path):
    with pytest.raises(ValueError, match="llm=None"):
        Services(settings(tmp_path), llm=None)
    with pytest.raises(ValueError, match="embedder=None"):
        Services(settings(tmp_path), embedder=None)
    with pytest.raises(TypeError, match="pipeline"):
        Services(settings(tmp_path)).with_(pipeline=object())


def test_with_replaces_some_and_keeps_the_other_given_ones(tmp_path):
    store, llm = QdrantClientStore.memory(), ScriptedLLM(default="ok")
    base = Services(settings(tmp_path), store=store, llm=llm, embedder=HashEmbedder(dim=8))
    reranker = OverlapReranker()
    ranked = base.with_(reranker=reranker, settings=settings(tmp_path, rerank_candidates=7))
    assert ranked.store is store and ranked.llm is llm and ranked.reranker is reranker
    assert ranked.rerank_stage.candidates == 7 and ranked.rerank_stage.reranker is reranker
    assert base.settings.rerank_candidates == 20
    rebuilt = base.with_(llm=UNSET)
    assert "llm" not in rebuilt._given and rebuilt.store is store


def test_the_pipeline_is_wired_once_from_settings_and_resolves_nothing(tmp_path):
    services = Services(settings(tmp_path, top_k=11, fusion="rrf", rrf_k=42, multi_query_n=2, context_top_n=4,
                                 transforms=("rewrite",), strategy="stuff"))
    pipeline = services.pipeline
    assert services.pipeline is pipeline
    retrieval = pipeline.retrieval
    assert (retrieval.retriever.top_k, retrieval.retriever.fusion, retrieval.retriever.rrf_k) == (11, "rrf", 42)
    assert retrieval.transformer.multi_query_n == 2
    assert (retrieval.config.context_top_n, retrieval.config.transforms, pipeline.config.strategy) == (
        4, ("rewrite",), "stuff")
    built = set(vars(services))
    assert not built & {"embedder", "embedder_resolution", "store", "catalog", "kbs", "reranker", "llm",
                        "rerank_stage", "citation_verifier"}


def test_per_request_arguments_override_the_wired_stages(tmp_path):
    services = kb_services(tmp_path, reranker=OverlapReranker(), top_k=3)
    result = services.pipeline.retrieve("warranty battery", KB, top_k=5, fusion="rrf", rerank=False, limit=4)
    assert result.info["top_k"] == 5 and result.info["fusion"] == "rrf" and not result.rerank_enabled
    default = services.pipeline.retrieve("warranty battery", KB, limit=2)
    assert default.info["top_k"] == 3 and default.info["fusion"] == "convex" and default.rerank_enabled
    assert services.pipeline.retrieval.retriever.top_k == 3  # nothing a request asked for stuck to the stage


def test_the_strategies_know_the_embedded_model_only_when_it_answers(tmp_path):
    """auto picks per embedded model (rag.strategies.AUTO_WHEN_TOO_LONG); any other model is None."""
    def model(**values):
        return Services(settings(tmp_path, **values)).pipeline.answerer.config.strategy.model

    assert model() == "small" and model(llm_embedded="large") == "large"
    assert model(llm_embedded="large", llm_base_url="http://127.0.0.1:9/v1") is None
    assert model(llm_gguf_path=tmp_path / "other.gguf") is None
    assert model(llm_local_model=tmp_path / "qwen") is None
    strategy = Services(settings(tmp_path)).pipeline.answerer.config.strategy
    assert strategy.support is not None and strategy.grounded is not None  # map_rerank ranks by the verifier
    assert Services(settings(tmp_path, verify_citations=False)).pipeline.answerer.config.strategy.support is None
