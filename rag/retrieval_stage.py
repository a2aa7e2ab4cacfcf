"""The retrieval stage of the answering pipeline: condense (multi-turn) -> query transforms ->
one search per named list and variant (`HybridRetriever`, rag/retrieval.py) -> fusion -> fetch
-> rerank with its cut-off -> versions (rag/version_stage.py) -> the hits.

Built once by the factory with its own config slice; a request's own `top_k`, `mode`, `fusion`,
`limit`, transforms, rerank on/off and `prefer_latest` are call arguments. Its decisions travel in a
`RetrievalTrace` (rag/trace.py), from which `info` is serialised. With reranking on, a model that
cannot be resolved or fails skips reranking (a warning, the fused order kept)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rag.errors import RagError
from rag.kb import KnowledgeBases
from rag.names import HYBRID, LISTS
from rag.requests import check_count, check_history, check_question, check_transforms, filter_dict
from rag.rerank import RerankStage
from rag.retrieval import HybridRetriever
from rag.trace import RerankDecision, RetrievalTrace
from rag.transforms import QueryTransformer, TransformLog, conversation_query, question_language
from rag.types import Filter, Hit
from rag.version_stage import VersionStage

__all__ = ["RetrievalConfig", "RetrievalResult", "RetrievalStage", "STAGES"]

log = logging.getLogger(__name__)
# every answer's timings hold these (0.0 when a stage did not run); generate and verify are the
# answering stages', seeded here so that a refusal reports them too
STAGES = ("condense", "transform", "embed", *LISTS, "fusion", "fetch", "rerank", "generate", "verify")
NO_RERANKER = "no reranker model available (none bundled; set RAG_RERANK_MODEL to a bge-reranker name or local path)"
OFF_FOR_REQUEST = "turned off for this request"


@dataclass(frozen=True)
class RetrievalConfig:
    """The plain values the retrieval stage reads besides its collaborators."""

    transforms: tuple[str, ...]  # query transforms run when a request names none
    context_top_n: int  # hits kept for the prompt when a request gives no `limit`
    original_query_weight: float
    prefer_latest_version: bool


@dataclass
class RetrievalResult:
    question: str
    kb: str
    hits: list[Hit]
    standalone_question: str
    variants: list[dict[str, Any]]
    timings: dict[str, float]
    rerank_enabled: bool
    trace: RetrievalTrace | None = None  # None: the hits were given, not retrieved (`answer_from_hits`)
    given_language: str = "en"  # the language when there is no trace

    @property
    def language(self) -> str:
        return self.given_language if self.trace is None else self.trace.language

    @property
    def info(self) -> dict[str, Any]:
        """The trace as `info` JSON (for callers of `retrieve`; the pipeline reads the trace)."""
        return {"language": self.given_language} if self.trace is None else self.trace.info()


class RetrievalStage:
    """Ranked hits for one question. `kbs` and `rerank` are zero-argument functions returning the
    collaborator (resolved on first use; `rerank` returns None when there is no reranker, and may
    raise a RagError: reranking is then skipped)."""

    def __init__(self, *, kbs: Callable[[], KnowledgeBases], transformer: QueryTransformer,
                 retriever: HybridRetriever, rerank: Callable[[], RerankStage | None], versions: VersionStage,
                 config: RetrievalConfig) -> None:
        check_transforms(config.transforms)
        self._kbs, self._rerank = kbs, rerank
        self.transformer, self.retriever, self.versions = transformer, retriever, versions
        self.config = config
        self._rerank_notice = False  # "no reranker" is logged once per stage

    def retrieve(self, question: str, kb: str, *, flt: Filter | None = None, top_k: int | None = None,
                 transforms: Sequence[str] | None = None, rerank: bool | None = None,
                 history: list[dict] | None = None, mode: str = HYBRID, limit: int | None = None,
                 fusion: str | None = None, prefer_latest: bool | None = None) -> RetrievalResult:
        """Ranked hits for a question (at most `limit`, default `context_top_n`); `fusion`
        overrides the `fusion` setting ("convex" or "rrf"), `prefer_latest` the
        `prefer_latest_version` setting (only the newest version of a document family)."""
        s = self.config
        started = time.perf_counter()
        question = check_question(question)
        history = check_history(history)
        names = check_transforms(s.transforms if transforms is None else transforms)
        self.retriever.check_mode(mode)
        top_k = check_count("top_k", self.retriever.top_k if top_k is None else top_k)
        limit = check_count("limit", s.context_top_n if limit is None else limit)
        knowledge = self._kbs().open(kb)
        timings = dict.fromkeys(STAGES, 0.0)
        lang = question_language(question, history)
        tlog = TransformLog()
        transformer = self.transformer

        t = time.perf_counter()
        condensed = transformer.condense(question, history, lang, tlog)
        standalone = condensed.question
        timings["condense"] = time.perf_counter() - t
        t = time.perf_counter()
        variants = transformer.expand(condensed.query, names, lang, tlog, original_weight=s.original_query_weight,
                                      mode=mode)
        timings["transform"] = time.perf_counter() - t
        fusion = self.retriever.fusion if fusion is None else fusion
        prefer_latest = s.prefer_latest_version if prefer_latest is None else prefer_latest
        retriever = self.retriever
        warnings = list(tlog.warnings)
        fused = retriever.search(knowledge, list(variants), mode=mode, flt=flt, timings=timings, top_k=top_k,
                                 fusion=fusion)
        stage, reason = self._rerank_stage(rerank)
        t = time.perf_counter()
        hits = retriever.hits(knowledge, fused[: max(stage.candidates, limit) if stage else limit])
        timings["fetch"] = time.perf_counter() - t
        t = time.perf_counter()
        decided = RerankDecision(False, reason)
        if stage is not None:
            query = conversation_query(question, history)
            try:
                outcome = stage.apply(query, hits, limit)
                hits, decided = outcome.hits, RerankDecision(True, cut=outcome.info, query=query)
            except RagError as exc:
                log.warning("reranking skipped: %s", exc.message)
                warnings.append(f"reranking skipped: {exc.message}")
                decided, hits = RerankDecision(False, exc.message), hits[:limit]
        else:
            hits = hits[:limit]
        timings["rerank"] = time.perf_counter() - t
        versions = self.versions.apply(knowledge, hits, question, prefer_latest, flt)
        searched = tuple(name for name, planned in retriever.plan(variants, mode).items() if planned)
        trace = RetrievalTrace(lang, mode, top_k, limit, retriever.rrf_k, fusion, len(fused), filter_dict(flt),
                               tlog.steps, warnings, decided, searched,
                               {name: retriever.weights[name] for name in searched}, versions)
        result = RetrievalResult(question, kb, versions.hits, standalone, [v.as_dict() for v in variants], timings,
                                 decided.enabled, trace)
        result.timings["retrieval_total"] = time.perf_counter() - started
        return result

    def _rerank_stage(self, wanted: bool | None) -> tuple[RerankStage | None, str | None]:
        """The rerank stage for this request, or None with the reason."""
        if wanted is False:
            return None, OFF_FOR_REQUEST
        try:
            stage = self._rerank()
        except RagError as exc:
            log.warning("reranking skipped: %s", exc.message)
            return None, exc.message
        if stage is None:
            if not self._rerank_notice:
                log.warning("reranking skipped: %s", NO_RERANKER)
                self._rerank_notice = True
            return None, NO_RERANKER
        return stage, None
