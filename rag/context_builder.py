"""Context building, the stage between retrieval and answering: what the model reads. Focus and
dedupe the hits (rag/focus.py), keep those about the question (`context_about`), pack them into
the token budget as numbered sources (rag/generation.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag import focus
from rag.answer_check import hits_about
from rag.generation import Layout, PackedContext, context_budget, estimate_tokens, pack_context
from rag.types import Hit


@dataclass(frozen=True)
class ContextConfig:
    context_top_n: int  # sources at most in one prompt
    llm_context_window: int
    llm_max_tokens: int
    context_dedupe: bool
    match_years: bool
    context_focus: bool
    context_focus_tokens: int
    context_about: bool
    answer_min_coverage: float
    layout: Layout = Layout()


@dataclass(frozen=True)
class BuiltContext:
    """The hits after focusing (all of them: multi-call strategies read those one prompt cannot
    hold), the packed sources of one prompt, and what focusing changed."""

    hits: list[Hit]
    packed: PackedContext
    changed: dict[str, Any]

    def info(self) -> dict[str, Any]:
        return {**self.packed.info(), **self.changed}


class ContextBuilder:
    def __init__(self, config: ContextConfig) -> None:
        self.config = config

    def build(self, question: str, hits: list[Hit], lang: str) -> BuiltContext:
        s = self.config
        budget = context_budget(s.llm_context_window, s.llm_max_tokens, question, lang, layout=s.layout)
        focused, changed = focus.prepare_context(question, hits, dedupe_on=s.context_dedupe,
                                                 match_years=s.match_years, focus_on=s.context_focus,
                                                 focus_tokens=s.context_focus_tokens, estimate=estimate_tokens)
        read = self._about(question, focused, changed)
        packed = pack_context(read, budget=budget, max_sources=s.context_top_n, lang=lang)
        return BuiltContext(focused, packed, changed)

    def _about(self, question: str, hits: list[Hit], changed: dict[str, Any]) -> list[Hit]:
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
