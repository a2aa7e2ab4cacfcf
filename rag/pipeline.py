"""The answering pipeline: condense -> transform -> hybrid retrieval (dense + BM25, RRF) ->
rerank -> refuse or generate with numbered sources -> citations -> verification.

Refusal: with reranking on, the best rerank score under `refuse_min_score` (or no hit left after
the `rerank_min_score` cut) answers the refusal sentence in the question's language without
calling the LLM. With reranking off, fused scores (scaled per list) say nothing about relevance on an
absolute scale, so only an empty result refuses, or sources that together state too little of
the question's subject for any answer to pass the answer check (`off_topic_sources`,
rag/answer_check.py `check_sources`); the prompt still tells the model to refuse.
After generation every claim of the answer is checked against the sources (model citations
verified, uncited claims attributed); an answer none of whose claims any source supports is
replaced by the refusal (`refuse_unsupported`), and so is one that does not address the question
(`answer_check`), unless the strategy gave a fallback answer that passes the same checks
(map_reduce's verified partial answers when the combining call's answer fails: `_fall_back`; a
stream's `done` event then carries it).

Stages (each built once by the factory, `rag.factory.Services.pipeline`, with its own config
slice): retrieval (condense, transforms, named lists fused, rerank, versions:
rag/retrieval_stage.py over `HybridRetriever`, rag/retrieval.py), context building
(rag/context_builder.py), answering (strategies, one streamed path for one-shot and streaming
answers, rag/answering.py), checking (refusals, citations, answer check, rag/checking.py). The
pipeline sequences them, times them and emits events; their decisions go into a typed
`AnswerTrace` (rag/trace.py), serialised into `Answer.info` once, at the end. The models behind
the stages are reached through zero-argument functions, so that nothing resolves or loads before
a query needs it. A request's own `top_k`, `mode`, `fusion`, `limit`, transforms and rerank
on/off are call arguments (passed on to the retrieval stage)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rag import collection, prompts
from rag.answering import Answerer, Written
from rag.checking import AnswerChecker, Outcome
from rag.citations import clean_answer
from rag.context_builder import BuiltContext, ContextBuilder
from rag.errors import RagError
from rag.generation import sources_from_hits
from rag.kb import KnowledgeBases
from rag.names import MULTI_CALL_STRATEGIES, STUFF
from rag.protocols import LLM
from rag.requests import check_question, filter_dict
from rag.retrieval_stage import STAGES, RetrievalResult, RetrievalStage
from rag.serialize import answer_to_dict, citation_to_dict, source_to_dict
from rag.strategies import check_strategy
from rag.trace import AnswerTrace, Refusal
from rag.transforms import question_language
from rag.types import Answer, Hit, Source

__all__ = ["Pipeline", "PipelineConfig", "RetrievalResult", "STAGES"]

log = logging.getLogger(__name__)
FALLBACK_TRACE_CHARS = 500  # of a refused last answer kept in the strategy info when a fallback replaced it


@dataclass(frozen=True)
class PipelineConfig:
    """The plain values the pipeline itself reads (the stages hold their own)."""

    strategy: str
    strategy_sources: int
    collection_questions: bool


class Pipeline:
    """Sequences the stages of one query, times them and emits events: retrieval (condense,
    transforms, named lists fused, rerank, versions), context building, answering (strategies),
    checking. `kbs` and `llm` are zero-argument functions returning the collaborator (resolved on
    first use)."""

    def __init__(self, *, kbs: Callable[[], KnowledgeBases], llm: Callable[[], LLM], retrieval: RetrievalStage,
                 context: ContextBuilder, answerer: Answerer, checker: AnswerChecker, config: PipelineConfig) -> None:
        self._kbs, self._llm = kbs, llm
        self.retrieval = retrieval
        self.context, self.answerer, self.checker = context, answerer, checker
        self.config = config

    @property
    def kbs(self) -> KnowledgeBases:
        return self._kbs()

    @property
    def llm(self) -> LLM:
        return self._llm()

    def retrieve(self, question: str, kb: str, **kwargs: Any) -> RetrievalResult:
        """Ranked hits for a question: `RetrievalStage.retrieve` (rag/retrieval_stage.py)."""
        return self.retrieval.retrieve(question, kb, **kwargs)

    # -- answering ---------------------------------------------------------------------------
    def answer(self, question: str, kb: str, *, generate: bool = True, strategy: str | None = None,
               collection_questions: bool | None = None, **kwargs: Any) -> Answer:
        """Retrieve, then refuse or generate. Raises LLMError when the model cannot answer."""
        started = time.perf_counter()
        about = self._about_collection(question, kb, generate, collection_questions, kwargs)
        if about is not None:
            return self._done(about, None, started)
        strategy = check_strategy(strategy, self.config.strategy)
        result = self.retrieve(question, kb, **self._strategy_limit(strategy, kwargs))
        return _last(self._run(result, generate, strategy, started))

    def answer_from_hits(self, question: str, hits: Sequence[Hit], *, lang: str | None = None) -> Answer:
        """Refuse or generate from the given hits (in that order) instead of retrieved ones: no
        condensing, transforms or reranking; the same context building, prompt (strategy stuff),
        citation check and refusal logic as `answer`. `rag eval --robustness` answers over
        controlled contexts with it."""
        started = time.perf_counter()
        question = check_question(question)
        lang = lang or question_language(question)
        result = RetrievalResult(question, "", list(hits), question, [], {}, False, given_language=lang)
        return _last(self._run(result, True, STUFF, started))

    def stream(self, question: str, kb: str, *, generate: bool = True, **kwargs: Any) -> Iterator[dict]:
        """Events: retrieval, token*, sources, citations, done; or error (then nothing more).
        A bad question or unknown knowledge base raises here, before any event."""
        check_question(question)
        strategy = check_strategy(kwargs.pop("strategy", None), self.config.strategy)
        self.kbs.open(kb)
        about = self._about_collection(question, kb, generate, kwargs.pop("collection_questions", None), kwargs)
        if about is not None:
            return _events(_catalog_run(about))
        kwargs = self._strategy_limit(strategy, kwargs)
        started = time.perf_counter()
        return _events(self._run(lambda: self.retrieve(question, kb, **kwargs), generate, strategy, started,
                                 stream=True))

    def _run(self, result: RetrievalResult | Callable[[], RetrievalResult], generate: bool, strategy: str,
             started: float, stream: bool = False) -> Generator[_Retrieved | str, None, Answer]:
        """The one answering path, for `answer`, `answer_from_hits` and `stream`: what was
        retrieved, the answer's text pieces, then the finished Answer. Raises RagError."""
        result = result() if callable(result) else result
        ans, trace, built = self._prepare(result, generate)
        planned = None
        if built is not None:
            planned = self.answerer.plan(result.standalone_question, built.hits, built.packed, result.language,
                                         strategy)
            if planned.seconds is not None:
                ans.timings["strategy"] = planned.seconds
            ans.sources = planned.step.packed.sources
            trace.context = {**(trace.context or {}), **planned.step.packed.info()}  # what focusing changed stays
            trace.strategy = planned.info
        yield _Retrieved(result.standalone_question, result.variants, result.rerank_enabled, ans.sources,
                         dict(result.timings))
        if planned is None:
            if ans.answer:
                yield ans.answer
            return self._done(ans, trace, started)
        t = time.perf_counter()
        written: list[Written] = []
        for piece in self.answerer.write(planned.step, written):
            if stream:
                ans.timings.setdefault("first_token", time.perf_counter() - t)
            yield piece
        ans.timings["generate"] = time.perf_counter() - t
        text, sources = written[0], planned.step.packed.sources
        if text.generation is not None:
            ans.timings.update(text.generation.timings())
            trace.generation = text.generation.info()
        ans.model, ans.answer, trace.generated = text.model, text.text, True
        outcome = self.checker.after(ans.standalone_question or ans.question, text.text, text.invalid, sources)
        if outcome.refusal is not None and planned.step.fallback_text:
            outcome = self._fall_back(ans, trace, planned.step.fallback_text, outcome, sources)
        if outcome.verify_seconds is not None:
            ans.timings["verify"] = outcome.verify_seconds
        ans.citations, trace.checked = outcome.citations, outcome.checked
        if outcome.refusal is not None:
            self._refuse(ans, trace, outcome.refusal)
            if outcome.refusal.text is None:  # the model refused: its own words stay
                ans.answer = text.text.strip() or ans.answer
        else:  # the version of each cited statement, and which version was used (rag/version_stage.py)
            ans.answer, ans.citations, added = self.retrieval.versions.finish(ans.answer, ans.citations, sources,
                                                                              trace.versions, trace.language)
            if added:
                ans.answer += " " + added
                yield " " + added
        return self._done(ans, trace, started)

    def _prepare(self, result: RetrievalResult, generate: bool) -> tuple[Answer, AnswerTrace, BuiltContext | None]:
        """The Answer shell, its trace, and the built context when the LLM must be called (None
        when the answer is a refusal or generation is off)."""
        ans = Answer(question=result.question, answer="", standalone_question=result.standalone_question,
                     query_variants=result.variants, hits=result.hits, timings=dict(result.timings),
                     rerank_enabled=result.rerank_enabled)
        trace = AnswerTrace(result.language, result.trace)
        refusal = self.checker.before(result.hits, result.rerank_enabled)
        if refusal is not None:
            self._refuse(ans, trace, refusal)
            return ans, trace, None
        if not generate:
            ans.sources = sources_from_hits(result.hits)
            trace.generated = False
            return ans, trace, None
        question = result.standalone_question
        built = self.context.build(question, result.hits, result.language)
        ans.sources = built.packed.sources
        trace.context = built.info()
        off_topic = self.checker.sources(question, built.hits)  # all the hits: map_reduce/refine read them
        if off_topic is not None:  # no answer from these sources would pass the answer check
            trace.sources_check = off_topic[1]
            self._refuse(ans, trace, off_topic[0])
            return ans, trace, None
        return ans, trace, built

    def _fall_back(self, ans: Answer, trace: AnswerTrace, fallback: str, refused: Outcome,
                   sources: Sequence[Source]) -> Outcome:
        """The last call's answer failed the checks: check the strategy's fallback answer
        (map_reduce's verified partial answers) and, when it passes, answer with it instead. The
        strategy info records it (`fallback`: used, and why the last call's answer was refused)."""
        text, invalid = clean_answer(fallback, len(sources))
        outcome = self.checker.after(ans.standalone_question or ans.question, text, invalid, sources)
        used = outcome.refusal is None
        trace.strategy = {**(trace.strategy or {}), "fallback": {
            "used": used, "refused_reason": refused.refusal.reason if refused.refusal else None,
            "refused_answer": ans.answer[:FALLBACK_TRACE_CHARS]}}
        if not used:
            return refused
        ans.answer = text
        seconds = [x for x in (refused.verify_seconds, outcome.verify_seconds) if x is not None]
        return replace(outcome, verify_seconds=sum(seconds) if seconds else None)

    @staticmethod
    def _refuse(ans: Answer, trace: AnswerTrace, refusal: Refusal) -> None:
        ans.refused, ans.citations, ans.answer = True, [], prompts.refusal(trace.language)
        trace.refusal = refusal

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
                            "filter": filter_dict(kwargs.get("flt"))})

    def _strategy_limit(self, strategy: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """map_reduce / refine / map_rerank read more sources than one prompt holds (strategy_sources)."""
        if strategy in MULTI_CALL_STRATEGIES and kwargs.get("limit") is None:
            return {**kwargs, "limit": self.config.strategy_sources}
        return kwargs

    @staticmethod
    def _done(ans: Answer, trace: AnswerTrace | None, started: float) -> Answer:
        """The finished answer: total time, and `info` serialised from the trace (once)."""
        ans.timings["total"] = time.perf_counter() - started
        if trace is not None:
            ans.info = trace.to_info()
        return ans


@dataclass(frozen=True)
class _Retrieved:
    """The first thing an answer run yields: what the retrieval event shows."""

    standalone_question: str
    variants: list[dict[str, Any]]
    rerank_enabled: bool
    sources: list[Source]
    timings: dict[str, float]


def _last(run: Generator[_Retrieved | str, None, Answer]) -> Answer:
    """Drain an answer run (one-shot): its Answer."""
    while True:
        try:
            next(run)
        except StopIteration as stop:
            return stop.value


def _catalog_run(ans: Answer) -> Generator[_Retrieved | str, None, Answer]:
    """A catalog answer as an answer run: the same events as a generated one."""
    yield _Retrieved(ans.standalone_question, [], False, ans.sources, {})
    yield ans.answer
    return ans


def _events(run: Generator[_Retrieved | str, None, Answer]) -> Iterator[dict]:
    """An answer run as the stream's events; a RagError becomes an error event (then nothing more)."""
    try:
        retrieved = next(run)
        yield {"type": "retrieval", "standalone_question": retrieved.standalone_question,
               "variants": retrieved.variants, "rerank_enabled": retrieved.rerank_enabled,
               "sources": [source_to_dict(s) for s in retrieved.sources], "timings": retrieved.timings}
        while True:
            try:
                piece = next(run)
            except StopIteration as stop:
                ans = stop.value
                break
            yield {"type": "token", "text": piece}
    except RagError as exc:
        log.warning("answering failed: %s", exc.message)
        yield {"type": "error", "code": exc.code, "message": exc.message}
        return
    finally:
        run.close()
    yield {"type": "sources", "sources": [source_to_dict(s, ans.citations) for s in ans.sources]}
    yield {"type": "citations", "citations": [citation_to_dict(c, ans.sources) for c in ans.citations]}
    yield {"type": "done", "answer": answer_to_dict(ans), "timings": dict(ans.timings)}
