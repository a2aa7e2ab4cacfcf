"""Checking, the stage around answering: refuse before the model is called (no hits, a low rerank
score, sources not about the question), then check what it wrote (citations verified, uncited
claims attributed, an unsupported or off-topic answer refused). Each check returns what it decided
(rag/trace.py); the pipeline applies it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.answer_check import check_answer, check_sources
from rag.citations import CitationVerifier, Support, attribute, extract_citations, support, uncited_sentences
from rag.generation import sources_from_hits
from rag.strategies import is_refusal
from rag.trace import (EMPTY_MODEL_ANSWER, LOW_RERANK_SCORE, MODEL_REFUSED, NO_HITS, OFF_TOPIC_ANSWER,
                       OFF_TOPIC_SOURCES, UNSUPPORTED_ANSWER, Checked, Refusal)
from rag.types import Citation, Hit, Source


@dataclass(frozen=True)
class CheckConfig:
    refuse_min_score: float
    verify_citations: bool
    refuse_unsupported: bool
    answer_check: bool
    answer_min_coverage: float


@dataclass(frozen=True)
class Outcome:
    """A generated answer after checking: its citations, what was found, and the refusal if any."""

    citations: list[Citation]
    checked: Checked
    refusal: Refusal | None = None
    verify_seconds: float | None = None


class AnswerChecker:
    """`verifier` is a zero-argument function returning the citation verifier (resolved on first use)."""

    def __init__(self, config: CheckConfig, verifier: Callable[[], CitationVerifier]) -> None:
        self.config = config
        self._verifier = verifier

    def before(self, hits: Sequence[Hit], reranked: bool) -> Refusal | None:
        """Refuse without calling the model: nothing retrieved, or the best rerank score too low."""
        if not hits:
            return Refusal(NO_HITS)
        if reranked and (hits[0].rerank_score or 0.0) < self.config.refuse_min_score:
            return Refusal(LOW_RERANK_SCORE)
        return None

    def sources(self, question: str, hits: Sequence[Hit]) -> tuple[Refusal, dict] | None:
        """Refuse when the sources together state too little of the question for any answer to pass
        the answer check: the refusal and the check's info, or None."""
        if not self.config.answer_check:
            return None
        about = check_sources(question, sources_from_hits(hits), self.config.answer_min_coverage)
        return None if about.ok else (Refusal(OFF_TOPIC_SOURCES), about.info())

    def after(self, question: str, text: str, invalid: list[int], sources: Sequence[Source]) -> Outcome:
        """Check a generated (cleaned) answer against the sources it was written from."""
        if is_refusal(text):  # empty, or the refusal sentence of some language
            return Outcome([], Checked(invalid), Refusal(MODEL_REFUSED if text.strip() else EMPTY_MODEL_ANSWER))
        citations = extract_citations(text, sources)
        uncited = len(uncited_sentences(text))
        verification = grounding = None
        seconds = None
        if self.config.verify_citations:
            t = time.perf_counter()
            verifier = self._verifier()
            if citations:
                verification = verifier.verify(citations, sources)
            added, grounding = attribute(text, citations, sources, verifier)
            citations = sorted([*citations, *added], key=lambda c: (c.sentence_start, c.origin != "model"))
            seconds = time.perf_counter() - t
            if self.config.refuse_unsupported and grounding["claims"] and not grounding["supported_claims"]:
                # not one statement of the answer is backed by a source: an invented answer
                checked = Checked(invalid, uncited, verification, grounding)
                return Outcome([], checked, _refused(UNSUPPORTED_ANSWER, text, citations), seconds)
        answer_check = None
        if self.config.answer_check:
            result = check_answer(question, text, sources, citations, min_coverage=self.config.answer_min_coverage)
            answer_check = result.info()
            if not result.ok:
                checked = Checked(invalid, uncited, verification, grounding, answer_check)
                return Outcome([], checked, _refused(OFF_TOPIC_ANSWER, text, citations), seconds)
        return Outcome(citations, Checked(invalid, uncited, verification, grounding, answer_check), None, seconds)

    def grounded(self, text: str, sources: Sequence[Source]) -> bool:
        """Whether a source supports at least one claim of an intermediate (map) answer."""
        verifier = self._verifier()
        citations = extract_citations(text, sources)
        if citations:
            verifier.verify(citations, sources)
        _, grounding = attribute(text, citations, sources, verifier)
        return not grounding["claims"] or grounding["supported_claims"] > 0

    def support(self, text: str, sources: Sequence[Source]) -> Support:
        """How well the sources back an intermediate (candidate) answer, as a number
        (`rag.citations.support`): map_rerank ranks its candidates by it."""
        return support(text, sources, self._verifier())


def _refused(reason: str, text: str, citations: Sequence[Citation]) -> Refusal:
    return Refusal(reason, text, tuple(sorted({c.chunk_id for c in citations})))

