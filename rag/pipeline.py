"""The answering pipeline: condense -> transform -> hybrid retrieval (dense + BM25, RRF) ->
rerank -> refuse or generate with numbered sources -> citations -> verification.

Refusal: with reranking on, the best rerank score under `refuse_min_score` (or no hit left after
the `rerank_min_score` cut) answers the refusal sentence in the question's language without
calling the LLM. With reranking off, fused RRF scores say nothing about relevance on an
absolute scale, so only an empty result refuses, or sources that together state too little of
the question's subject for any answer to pass the answer check (`off_topic_sources`,
rag/answer_check.py `check_sources`); the prompt still tells the model to refuse.
After generation every claim of the answer is checked against the sources (model citations
verified, uncited claims attributed); an answer none of whose claims any source supports is
replaced by the refusal (`refuse_unsupported`), and so is one that does not address the question
(`answer_check`).

Construction: every stage is built once, by the factory (`rag.factory.Services.pipeline`), from
settings; the pipeline stores them. The models behind the stages (LLM, reranker, the embedder
the knowledge bases and the verifier use) are reached through zero-argument functions, so that
nothing resolves or loads before a query needs it. A request's own `top_k`, `mode`, `fusion`,
`limit`, transforms and rerank on/off are call arguments."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any

from rag import collection, focus, prompts, versions
from rag.answer_check import check_answer, check_sources, hits_about
from rag.citations import (CitationVerifier, MarkerFilter, attribute, clean_answer, extract_citations,
                           uncited_sentences)
from rag.errors import InvalidRequest, RagError
from rag.generation import (Layout, PackedContext, build_messages, context_budget, estimate_tokens, pack_context,
                            sources_from_hits)
from rag.kb import KnowledgeBase, KnowledgeBases
from rag.llm_timing import Generation, StreamTimer, generate_timed
from rag.protocols import LLM
from rag.rerank import RerankStage
from rag.retrieval import MODES, HybridRetriever
from rag.serialize import answer_to_dict, citation_to_dict, source_to_dict
from rag.settings import TRANSFORMS
from rag.strategies import FinalStep, StrategyConfig, StrategyRunner, check_strategy, resolve
from rag.transforms import QueryTransformer, TransformLog, Variant, question_language, rerank_query
from rag.types import Answer, Filter, Hit, Source

__all__ = ["Pipeline", "PipelineConfig", "RetrievalResult"]

log = logging.getLogger(__name__)
STAGES = ("condense", "transform", "embed", "dense", "bm25", "fusion", "fetch", "rerank", "generate", "verify")
MAX_QUESTION_CHARS = 4000
NO_RERANKER = "no reranker model available (none bundled; set RAG_RERANK_MODEL to a bge-reranker name or local path)"


@dataclass(frozen=True)
class PipelineConfig:
    """The plain values the pipeline itself reads (the stages hold their own)."""

    transforms: tuple[str, ...]  # query transforms run when a request names none
    context_top_n: int  # hits kept for the prompt when a request gives no `limit`
    original_query_weight: float
    prefer_latest_version: bool
    version_min_overlap: float
    llm_max_tokens: int
    llm_temperature: float
    llm_context_window: int
    refuse_min_score: float
    verify_citations: bool
    refuse_unsupported: bool
    strategy: str
    strategy_sources: int
    collection_questions: bool
    # what the model reads and how it is asked (rag/focus.py, rag/answer_check.py)
    context_dedupe: bool
    match_years: bool
    context_focus: bool
    context_focus_tokens: int
    context_about: bool
    question_first: bool
    context_best_last: bool
    answer_check: bool
    answer_min_coverage: float
    default_kb: str = "default"  # for callers that name no knowledge base (the integrations)


@dataclass
class RetrievalResult:
    question: str
    kb: str
    hits: list[Hit]
    standalone_question: str
    variants: list[dict[str, Any]]
    timings: dict[str, float]
    rerank_enabled: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str:
        return self.info.get("language", "en")


@dataclass(frozen=True)
class _Search:
    """A retrieval request after condensing and transforms: all `Pipeline._ranked` needs."""

    question: str
    kb: str
    knowledge: KnowledgeBase
    history: list[dict[str, str]]
    lang: str
    standalone: str
    variants: tuple[Variant, ...]
    log: TransformLog  # what condensing and the transforms did
    flt: Filter | None
    mode: str
    top_k: int
    fusion: str
    rerank: bool | None
    prefer_latest: bool


class Pipeline:
    """One query from question to verified answer. `kbs`, `llm`, `rerank` and `verifier` are
    zero-argument functions returning the collaborator (resolved on first use; `rerank` returns
    None when there is no reranker, and may raise a RagError: reranking is then skipped)."""

    def __init__(self, *, kbs: Callable[[], KnowledgeBases], llm: Callable[[], LLM],
                 transformer: QueryTransformer, retriever: HybridRetriever,
                 rerank: Callable[[], RerankStage | None], verifier: Callable[[], CitationVerifier],
                 strategy: StrategyConfig, config: PipelineConfig) -> None:
        check_transforms(config.transforms)
        self._kbs, self._llm, self._rerank, self._verifier = kbs, llm, rerank, verifier
        self.transformer = transformer
        self.retriever = retriever
        self.config = config
        grounded = self._grounded if config.verify_citations and config.refuse_unsupported else None
        self.strategy_config = StrategyConfig(strategy.max_tokens, strategy.temperature, strategy.group_sources,
                                              strategy.parallel, grounded)
        self._rerank_notice = False  # "no reranker" is logged once per pipeline

    @property
    def kbs(self) -> KnowledgeBases:
        return self._kbs()

    @property
    def llm(self) -> LLM:
        return self._llm()

    # -- retrieval ---------------------------------------------------------------------------
    def retrieve(self, question: str, kb: str, *, flt: Filter | None = None, top_k: int | None = None,
                 transforms: Sequence[str] | None = None, rerank: bool | None = None,
                 history: list[dict] | None = None, mode: str = "hybrid", limit: int | None = None,
                 fusion: str | None = None, prefer_latest: bool | None = None) -> RetrievalResult:
        """Ranked hits for a question (at most `limit`, default `context_top_n`); `fusion`
        overrides the `fusion` setting ("confidence" or "rrf"), `prefer_latest` the
        `prefer_latest_version` setting (only the newest version of a document family)."""
        s = self.config
        started = time.perf_counter()
        question = check_question(question)
        history = check_history(history)
        names = check_transforms(s.transforms if transforms is None else transforms)
        if mode not in MODES:
            raise InvalidRequest(f"unknown retrieval mode {mode!r}; choose from {list(MODES)}", field="mode")
        top_k = _check_count("top_k", self.retriever.top_k if top_k is None else top_k)
        limit = _check_count("limit", s.context_top_n if limit is None else limit)
        knowledge = self.kbs.open(kb)
        timings = dict.fromkeys(STAGES, 0.0)
        lang = question_language(question, history)
        tlog = TransformLog()
        transformer = self.transformer

        t = time.perf_counter()
        standalone = transformer.condense(question, history, lang, tlog)
        timings["condense"] = time.perf_counter() - t
        t = time.perf_counter()
        variants = transformer.expand(standalone, names, lang, tlog, original_weight=s.original_query_weight,
                                      mode=mode)
        timings["transform"] = time.perf_counter() - t
        search = _Search(question, kb, knowledge, history, lang, standalone, tuple(variants), tlog, flt, mode, top_k,
                         self.retriever.fusion if fusion is None else fusion, rerank,
                         s.prefer_latest_version if prefer_latest is None else prefer_latest)
        result = self._ranked(search, limit, timings)
        result.timings["retrieval_total"] = time.perf_counter() - started
        return result

    def _ranked(self, search: _Search, limit: int, timings: dict[str, float]) -> RetrievalResult:
        """The condensed, transformed request searched, fetched, reranked and cut to `limit` hits
        (timed into `timings`)."""
        retriever, knowledge, question, history = self.retriever, search.knowledge, search.question, search.history
        warnings = list(search.log.warnings)
        fused = retriever.search(knowledge, list(search.variants), mode=search.mode, flt=search.flt, timings=timings,
                                 top_k=search.top_k, fusion=search.fusion)
        stage, rerank_info = self._rerank_stage(search.rerank)
        t = time.perf_counter()
        hits = retriever.hits(knowledge, fused[: max(stage.candidates, limit) if stage else limit])
        timings["fetch"] = time.perf_counter() - t
        t = time.perf_counter()
        if stage is not None:
            query = rerank_query(question, history)
            try:
                outcome = stage.apply(query, hits, limit)
                hits, rerank_info = outcome.hits, {**outcome.info, "query": query}
            except RagError as exc:
                log.warning("reranking skipped: %s", exc.message)
                warnings.append(f"reranking skipped: {exc.message}")
                stage, rerank_info, hits = None, {"enabled": False, "reason": exc.message}, hits[:limit]
        else:
            hits = hits[:limit]
        timings["rerank"] = time.perf_counter() - t
        used_versions: list[dict[str, Any]] = []
        if search.prefer_latest:
            families = versions.families(knowledge, self.config.version_min_overlap)
            hits, used_versions = versions.prefer_latest(hits, families, question)
        info = {"language": search.lang, "mode": search.mode, "top_k": search.top_k, "limit": limit,
                "rrf_k": retriever.rrf_k, "fusion": search.fusion, "fused_candidates": len(fused),
                "filter": _filter_dict(search.flt), "transforms": search.log.steps, "warnings": warnings,
                "rerank": {"enabled": stage is not None, **rerank_info}}
        if used_versions:
            info["versions"] = used_versions
        return RetrievalResult(question, search.kb, hits, search.standalone, [v.as_dict() for v in search.variants],
                               timings, stage is not None, info)

    def _rerank_stage(self, wanted: bool | None) -> tuple[RerankStage | None, dict[str, Any]]:
        """The rerank stage for this request, or None with the reason."""
        if wanted is False:
            return None, {"reason": "turned off for this request"}
        try:
            stage = self._rerank()
        except RagError as exc:
            log.warning("reranking skipped: %s", exc.message)
            return None, {"reason": exc.message}
        if stage is None:
            if not self._rerank_notice:
                log.warning("reranking skipped: %s", NO_RERANKER)
                self._rerank_notice = True
            return None, {"reason": NO_RERANKER}
        return stage, {"model": stage.reranker.name}

    # -- answering ---------------------------------------------------------------------------
    def answer(self, question: str, kb: str, *, generate: bool = True, strategy: str | None = None,
               collection_questions: bool | None = None, **kwargs: Any) -> Answer:
        """Retrieve, then refuse or generate. Raises LLMError when the model cannot answer."""
        started = time.perf_counter()
        about = self._about_collection(question, kb, generate, collection_questions, kwargs)
        if about is not None:
            return self._done(about, started)
        strategy = check_strategy(strategy, self.config.strategy)
        result = self.retrieve(question, kb, **self._strategy_limit(strategy, kwargs))
        ans, packed = self._prepare(result, generate)
        if packed is None:
            return self._done(ans, started)
        llm = self.llm
        step = self._final_step(ans, result, packed, strategy)
        t = time.perf_counter()
        gen = step.generation if step.messages is None else generate_timed(
            llm, step.messages, max_tokens=self.config.llm_max_tokens, temperature=self.config.llm_temperature)
        ans.timings["generate"] = time.perf_counter() - t
        _record_generation(ans, gen)
        raw = step.text if step.messages is None else gen.text
        text, invalid = clean_answer(raw, len(step.packed.sources))
        self._finish(ans, text, invalid, step.packed, llm.name)
        _version_note(ans)
        return self._done(ans, started)

    def answer_from_hits(self, question: str, hits: Sequence[Hit], *, lang: str | None = None) -> Answer:
        """Refuse or generate from the given hits (in that order) instead of retrieved ones: no
        condensing, transforms or reranking, but the same packing, prompt, citation check and
        refusal logic as `answer`. `rag eval --robustness` answers over controlled contexts with it."""
        started = time.perf_counter()
        question = check_question(question)
        lang = lang or question_language(question)
        result = RetrievalResult(question, "", list(hits), question, [], {}, False, {"language": lang})
        ans, packed = self._prepare(result, True)
        if packed is None:
            return self._done(ans, started)
        llm = self.llm
        t = time.perf_counter()
        gen = generate_timed(llm, build_messages(question, packed.sources, lang, self._layout()),
                             max_tokens=self.config.llm_max_tokens, temperature=self.config.llm_temperature)
        ans.timings["generate"] = time.perf_counter() - t
        _record_generation(ans, gen)
        text, invalid = clean_answer(gen.text, len(packed.sources))
        self._finish(ans, text, invalid, packed, llm.name)
        return self._done(ans, started)

    def _layout(self) -> Layout:
        """The configured layout of the answer prompt (question first, best source last)."""
        return Layout(self.config.question_first, self.config.context_best_last)

    def _about_collection(self, question: str, kb: str, generate: bool, wanted: bool | None,
                          kwargs: dict[str, Any]) -> Answer | None:
        """The catalog's answer to a question about the collection itself (rag/collection.py), or None."""
        if not generate or not (self.config.collection_questions if wanted is None else wanted):
            return None
        found = collection.detect(check_question(question))
        if found is None:
            return None
        lang = question_language(question, kwargs.get("history"))
        result = collection.answer(self.kbs.open(kb), found, lang, kwargs.get("flt"))
        if result is None:
            return None
        return Answer(question=question, answer=result.text, sources=result.sources, citations=result.citations,
                      standalone_question=question, model="catalog",
                      info={"language": lang, "generated": False, "collection": result.info,
                            "filter": _filter_dict(kwargs.get("flt"))})

    def _strategy_limit(self, strategy: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """map_reduce / refine / map_rerank read more sources than one prompt holds (strategy_sources)."""
        if strategy in ("map_reduce", "refine", "map_rerank") and kwargs.get("limit") is None:
            return {**kwargs, "limit": self.config.strategy_sources}
        return kwargs

    def _final_step(self, ans: Answer, result: RetrievalResult, packed: PackedContext, strategy: str) -> FinalStep:
        """Run the strategy's intermediate LLM calls; the sources and messages of the last call."""
        name = resolve(strategy, packed)
        config = replace(self.strategy_config, layout=self._layout())
        runner = StrategyRunner(self._llm, config)  # per answer: it counts this answer's calls
        t = time.perf_counter()
        step = runner.final_step(name, result.standalone_question, packed.hits, packed, result.language)
        if name != "stuff":
            ans.timings["strategy"] = time.perf_counter() - t
        ans.sources = step.packed.sources
        ans.info["context"] = {**ans.info.get("context", {}), **step.packed.info()}  # what focusing changed stays
        ans.info["strategy"] = {"requested": strategy, **step.info,
                                "llm_calls": runner.calls + (step.messages is not None)}
        return step

    def _grounded(self, text: str, sources: Sequence[Source]) -> bool:
        """Whether a source supports at least one claim of an intermediate (map) answer."""
        verifier = self._verifier()
        citations = extract_citations(text, sources)
        if citations:
            verifier.verify(citations, sources)
        _, grounding = attribute(text, citations, sources, verifier)
        return not grounding["claims"] or grounding["supported_claims"] > 0

    def stream(self, question: str, kb: str, *, generate: bool = True, **kwargs: Any) -> Iterator[dict]:
        """Events: retrieval, token*, sources, citations, done; or error (then nothing more).
        A bad question or unknown knowledge base raises here, before any event."""
        check_question(question)
        strategy = check_strategy(kwargs.pop("strategy", None), self.config.strategy)
        self.kbs.open(kb)
        about = self._about_collection(question, kb, generate, kwargs.pop("collection_questions", None), kwargs)
        if about is not None:
            return _catalog_events(about)
        return self._events(question, kb, generate, self._strategy_limit(strategy, kwargs), strategy)

    def _events(self, question: str, kb: str, generate: bool, kwargs: dict[str, Any],
                strategy: str = "auto") -> Iterator[dict]:
        started = time.perf_counter()
        step: FinalStep | None = None
        try:
            result = self.retrieve(question, kb, **kwargs)
            ans, packed = self._prepare(result, generate)
            if packed is not None:
                step = self._final_step(ans, result, packed, strategy)  # the intermediate calls, if any
        except RagError as exc:
            yield {"type": "error", "code": exc.code, "message": exc.message}
            return
        sources = step.packed.sources if step else ans.sources
        yield {"type": "retrieval", "standalone_question": result.standalone_question, "variants": result.variants,
               "rerank_enabled": result.rerank_enabled, "sources": [source_to_dict(s) for s in sources],
               "timings": dict(result.timings)}
        if step is None:
            if ans.answer:
                yield {"type": "token", "text": ans.answer}
        else:
            marker_filter = MarkerFilter(len(step.packed.sources))
            pieces: list[str] = []
            t = time.perf_counter()
            timer = StreamTimer()
            try:
                llm = self.llm
                with closing(_deltas(llm, step, self.config.llm_max_tokens,
                                     self.config.llm_temperature, timer)) as deltas:
                    for delta in deltas:
                        text = marker_filter.feed(delta)
                        if text:
                            ans.timings.setdefault("first_token", time.perf_counter() - t)
                            pieces.append(text)
                            yield {"type": "token", "text": text}
                tail = marker_filter.flush()
            except RagError as exc:
                log.warning("generation failed: %s", exc.message)
                yield {"type": "error", "code": exc.code, "message": exc.message}
                return
            if tail:
                pieces.append(tail)
                yield {"type": "token", "text": tail}
            ans.timings["generate"] = time.perf_counter() - t
            _record_generation(ans, timer.result() if step.messages is not None else step.generation)
            self._finish(ans, "".join(pieces), marker_filter.invalid, step.packed, llm.name)
            added = _version_note(ans)
            if added:
                yield {"type": "token", "text": added}
        self._done(ans, started)
        yield {"type": "sources", "sources": [source_to_dict(s, ans.citations) for s in ans.sources]}
        yield {"type": "citations", "citations": [citation_to_dict(c, ans.sources) for c in ans.citations]}
        yield {"type": "done", "answer": answer_to_dict(ans), "timings": dict(ans.timings)}

    def _prepare(self, result: RetrievalResult, generate: bool) -> tuple[Answer, PackedContext | None]:
        """The Answer shell, and the packed context when the LLM must be called (None when the
        answer is a refusal or generation is off)."""
        s = self.config
        ans = Answer(question=result.question, answer="", standalone_question=result.standalone_question,
                     query_variants=result.variants, hits=result.hits, timings=dict(result.timings),
                     rerank_enabled=result.rerank_enabled, info=dict(result.info))
        reason = None
        if not result.hits:
            reason = "no_hits"
        elif result.rerank_enabled and (result.hits[0].rerank_score or 0.0) < s.refuse_min_score:
            reason = "low_rerank_score"
        if reason:
            ans.refused, ans.answer = True, prompts.refusal(result.language)
            ans.info["refusal_reason"] = reason
            return ans, None
        if not generate:
            ans.sources = sources_from_hits(result.hits)
            ans.info["generated"] = False
            return ans, None
        question = result.standalone_question
        budget = context_budget(s.llm_context_window, s.llm_max_tokens, question, result.language,
                                layout=self._layout())
        hits, changed = focus.prepare_context(question, result.hits, dedupe_on=s.context_dedupe,
                                              match_years=s.match_years, focus_on=s.context_focus,
                                              focus_tokens=s.context_focus_tokens, estimate=estimate_tokens)
        read = self._about(question, hits, changed)
        packed = pack_context(read, budget=budget, max_sources=s.context_top_n, lang=result.language)
        ans.sources = packed.sources
        ans.info["context"] = {**packed.info(), **changed}
        if s.answer_check:  # all the hits: map_reduce / refine read those the prompt cannot hold
            about = check_sources(question, sources_from_hits(hits), s.answer_min_coverage)
            if not about.ok:  # no answer from these sources would pass the answer check
                ans.info["answer_check"] = about.info()
                ans.refused, ans.answer = True, prompts.refusal(result.language)
                ans.info["refusal_reason"] = "off_topic_sources"
                return ans, None
        return ans, packed

    def _about(self, question: str, hits: list[Hit], changed: dict[str, int]) -> list[Hit]:
        """The hits the model reads: with `context_about`, those each about the question
        (`answer_check.hits_about`), or all of them when none is; `changed` counts those left out."""
        s = self.config
        if not (s.context_about and s.answer_min_coverage > 0 and hits):
            return hits
        about = hits_about(question, hits, s.answer_min_coverage)
        if not about or len(about) == len(hits):
            return hits
        changed["off_topic_left_out"] = len(hits) - len(about)
        return about

    def _finish(self, ans: Answer, text: str, invalid: list[int], packed: PackedContext, model: str) -> None:
        lang = ans.info["language"]
        ans.model, ans.answer = model, text
        ans.info["generated"] = True
        ans.info["invalid_citations"] = invalid
        if not text.strip() or _is_refusal(text):
            ans.refused = True
            ans.info["refusal_reason"] = "model_refused" if text.strip() else "empty_model_answer"
            ans.answer = text.strip() or prompts.refusal(lang)
            return
        ans.citations = extract_citations(text, packed.sources)
        ans.info["uncited_sentences"] = len(uncited_sentences(text))
        if not self.config.verify_citations:
            self._check(ans, text, packed)
            return
        t = time.perf_counter()
        verifier = self._verifier()
        if ans.citations:
            ans.info["verification"] = verifier.verify(ans.citations, packed.sources)
        added, grounding = attribute(text, ans.citations, packed.sources, verifier)
        ans.citations = sorted([*ans.citations, *added], key=lambda c: (c.sentence_start, c.origin != "model"))
        ans.info["grounding"] = grounding
        ans.timings["verify"] = time.perf_counter() - t
        if self.config.refuse_unsupported and grounding["claims"] and not grounding["supported_claims"]:
            # not one statement of the answer is backed by a source: an invented answer
            self._refuse(ans, "unsupported_answer", text)
            return
        self._check(ans, text, packed)

    def _check(self, ans: Answer, text: str, packed: PackedContext) -> None:
        """Refuse an answer that does not address the question (rag/answer_check.py)."""
        if not self.config.answer_check:
            return
        result = check_answer(ans.standalone_question or ans.question, text, packed.sources, ans.citations,
                              min_coverage=self.config.answer_min_coverage)
        ans.info["answer_check"] = result.info()
        if not result.ok:
            self._refuse(ans, "off_topic_answer", text)

    @staticmethod
    def _refuse(ans: Answer, reason: str, text: str) -> None:
        ans.info["refused_sources"] = sorted({c.chunk_id for c in ans.citations})
        ans.refused, ans.citations = True, []
        ans.info["refusal_reason"] = reason
        ans.info["unsupported_answer"] = text
        ans.answer = prompts.refusal(ans.info["language"])

    @staticmethod
    def _done(ans: Answer, started: float) -> Answer:
        ans.timings["total"] = time.perf_counter() - started
        return ans


def _version_note(ans: Answer) -> str:
    """Append which version of a document family the answer used (rag/versions.py); the text added."""
    if ans.refused or not ans.info.get("versions"):
        return ""
    added = " " + versions.note(ans.info["versions"], ans.info.get("language", "en"))
    ans.answer += added
    return added


def _catalog_events(ans: Answer) -> Iterator[dict]:
    """The stream of an answer from the catalog: the same events as a generated one."""
    yield {"type": "retrieval", "standalone_question": ans.standalone_question, "variants": [],
           "rerank_enabled": False, "sources": [source_to_dict(s) for s in ans.sources], "timings": {}}
    yield {"type": "token", "text": ans.answer}
    yield {"type": "sources", "sources": [source_to_dict(s, ans.citations) for s in ans.sources]}
    yield {"type": "citations", "citations": [citation_to_dict(c, ans.sources) for c in ans.citations]}
    yield {"type": "done", "answer": answer_to_dict(ans), "timings": dict(ans.timings)}


def _deltas(llm: Any, step: FinalStep, max_tokens: int, temperature: float, timer: StreamTimer) -> Iterator[str]:
    """The final step as text deltas: the streamed last call (timed by `timer`), or the text a
    strategy already chose."""
    if step.messages is None:
        yield step.text or ""
        return
    yield from timer.watch(llm.stream(step.messages, max_tokens=max_tokens, temperature=temperature,
                                      usage=timer.usage))


def _record_generation(ans: Answer, gen: Generation | None) -> None:
    """TTFT/TPOT of the call the answer's text comes from into the timings, its token counts into
    `info["generation"]` (rag/llm_timing.py); nothing for a text no call wrote."""
    if gen is not None:
        ans.timings.update(gen.timings())
        ans.info["generation"] = gen.info()


def _is_refusal(text: str) -> bool:
    head = text.strip().lower()
    return any(head.startswith(r.lower().rstrip(".。")) for r in prompts.REFUSAL.values())


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequest("the question is empty", field="question")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}",
                             field="question")
    return question.strip()


def check_history(history: list[dict] | None) -> list[dict[str, str]]:
    out = []
    for i, message in enumerate(history or []):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system") \
                or not isinstance(message.get("content"), str):
            raise InvalidRequest(f"history[{i}] must be {{'role': 'user'|'assistant', 'content': str}}, "
                                 f"got {message!r}"[:200], field="history")
        if message["role"] != "system":
            out.append({"role": message["role"], "content": message["content"]})
    return out


def check_transforms(names: Sequence[str]) -> list[str]:
    out = [n.strip() for name in names for n in str(name).split(",") if n.strip()]
    unknown = [n for n in out if n not in TRANSFORMS]
    if unknown:
        raise InvalidRequest(f"unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}", field="transforms")
    return list(dict.fromkeys(out))


def _check_count(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise InvalidRequest(f"{name} must be an integer from 1 to 1000, got {value!r}", field=name)
    return value


def _filter_dict(flt: Filter | None) -> dict[str, Any] | None:
    if flt is None or flt.is_empty():
        return None
    return {"sources": list(flt.sources), "doc_ids": list(flt.doc_ids), "tags": list(flt.tags),
            "mtime_from": flt.mtime_from, "mtime_to": flt.mtime_to}
