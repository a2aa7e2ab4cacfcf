"""Answering, the stage that writes the text: the strategy runs its intermediate calls (stuff is
one strategy: none), then the last call is streamed through one path: text deltas cleaned of
invalid markers (`MarkerFilter`); a one-shot answer joins the same deltas."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from rag.citations import MarkerFilter
from rag.generation import PackedContext
from rag.llm_timing import Generation, StreamTimer
from rag.names import STUFF
from rag.protocols import LLM
from rag.strategies import FinalStep, StrategyConfig, StrategyRunner, resolve
from rag.types import Hit


@dataclass(frozen=True)
class AnswerConfig:
    strategy: StrategyConfig  # group size, parallel map calls, grounding of partial answers, layout


@dataclass
class Planned:
    """The final step chosen by the strategy, with what the strategy did."""

    step: FinalStep
    info: dict[str, Any]
    seconds: float | None  # time in intermediate calls (None for stuff)


@dataclass
class Written:
    """The cleaned answer text and the markers removed as invalid; `generation` is the call the
    text comes from (None for a text no call wrote)."""

    text: str
    invalid: list[int]
    generation: Generation | None
    model: str


class Answerer:
    """`llm` is a zero-argument function returning the model (resolved on first use)."""

    def __init__(self, llm: Callable[[], LLM], config: AnswerConfig) -> None:
        self._llm = llm
        self.config = config

    def plan(self, question: str, hits: list[Hit], packed: PackedContext, lang: str, strategy: str) -> Planned:
        """Run the strategy's intermediate LLM calls; the final step."""
        choice = resolve(strategy, packed, self.config.strategy.model)
        runner = StrategyRunner(self._llm, self.config.strategy)  # per answer: it counts this answer's calls
        t = time.perf_counter()
        step = runner.final_step(choice.name, question, hits, packed, lang)
        seconds = None if choice.name == STUFF else time.perf_counter() - t
        info = {"requested": strategy, **step.info, "reason": choice.reason,
                "llm_calls": runner.calls + (step.messages is not None)}
        return Planned(step, info, seconds)

    def write(self, step: FinalStep, written: list[Written]) -> Iterator[str]:
        """The final step's text as cleaned deltas, streamed from the last call (a one-shot answer
        joins them); when done, appends the whole cleaned text to `written`. Raises LLMError when
        the model cannot answer."""
        llm = self._llm()
        marker_filter = MarkerFilter(len(step.packed.sources))
        pieces: list[str] = []
        timer = StreamTimer()
        with closing(self._deltas(llm, step, timer)) as deltas:
            for delta in deltas:
                text = marker_filter.feed(delta)
                if text:
                    pieces.append(text)
                    yield text
        tail = marker_filter.flush()
        if tail:
            pieces.append(tail)
            yield tail
        gen = step.generation if step.messages is None else timer.result()
        written.append(Written("".join(pieces), marker_filter.invalid, gen, llm.name))

    def _deltas(self, llm: LLM, step: FinalStep, timer: StreamTimer) -> Iterator[str]:
        """The final step as raw text deltas: the last call (timed by `timer`), or the text a
        strategy already chose."""
        if step.messages is None:
            yield step.text or ""
            return
        config = self.config.strategy  # the answer's max_tokens and temperature, the strategy's calls' too
        yield from timer.watch(llm.stream(step.messages, max_tokens=config.max_tokens,
                                          temperature=config.temperature, usage=timer.usage))
