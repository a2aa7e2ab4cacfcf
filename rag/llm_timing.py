"""Time to first token (TTFT) and time per output token (TPOT) of one LLM call.

Every call whose text can become an answer is made through `LLM.stream` and joined (`generate_timed`),
so its first token is seen when it arrives; `StreamTimer.watch` does the same for a stream the
caller forwards token by token. TTFT runs from the call (waiting for the model's lock included:
what a client waits) to the first non-empty delta; TPOT is the time after the first token divided
by the output tokens after the first. The output tokens are the runtime's count when the adapter
fills the `TokenUsage` it is given, else the number of non-empty deltas (an estimate: llama.cpp
and OpenAI-compatible servers stream about one token per delta)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.protocols import LLM

__all__ = ["Generation", "StreamTimer", "TokenUsage", "generate_timed"]


@dataclass
class TokenUsage:
    """Token counts of one call, filled in by the LLM adapter when its runtime reports them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Generation:
    """The text of one LLM call and how long its tokens took."""

    text: str
    ttft: float | None  # None: the model produced no token
    tpot: float | None  # None: fewer than two output tokens
    output_tokens: int
    counted_by: str  # "runtime" (the adapter's usage) or "deltas" (an estimate)
    prompt_tokens: int | None = None

    def timings(self) -> dict[str, float]:
        """`ttft` and `tpot` in seconds, for `Answer.timings` (left out when not measured)."""
        out = {}
        if self.ttft is not None:
            out["ttft"] = self.ttft
        if self.tpot is not None:
            out["tpot"] = self.tpot
        return out

    def info(self) -> dict[str, Any]:
        """Token counts, for `Answer.info["generation"]`."""
        out: dict[str, Any] = {"output_tokens": self.output_tokens, "output_tokens_counted_by": self.counted_by}
        if self.prompt_tokens is not None:
            out["prompt_tokens"] = self.prompt_tokens
        return out


class StreamTimer:
    """Times one streamed call: create it just before calling `llm.stream(..., usage=timer.usage)`,
    pass the deltas through `watch`, then read `result()`."""

    def __init__(self) -> None:
        self.usage = TokenUsage()
        self._start = time.perf_counter()
        self._first: float | None = None
        self._last: float | None = None
        self._deltas = 0
        self._parts: list[str] = []

    def watch(self, deltas: Iterable[str]) -> Iterator[str]:
        for delta in deltas:
            if delta:
                now = time.perf_counter()
                if self._first is None:
                    self._first = now
                self._last = now
                self._deltas += 1
                self._parts.append(delta)
            yield delta

    def result(self) -> Generation:
        counted = self.usage.completion_tokens
        n = counted if counted is not None and counted > 0 else self._deltas
        ttft = None if self._first is None else self._first - self._start
        tpot = None
        if self._first is not None and self._last is not None and n >= 2:
            tpot = (self._last - self._first) / (n - 1)
        return Generation("".join(self._parts), ttft, tpot, n,
                          "runtime" if counted is not None and counted > 0 else "deltas",
                          self.usage.prompt_tokens)


def generate_timed(llm: LLM, messages: list[dict[str, str]], *, max_tokens: int, temperature: float) -> Generation:
    """One call through `llm.stream`, joined. Raises what the stream raises (LLMError)."""
    timer = StreamTimer()
    for _ in timer.watch(llm.stream(messages, max_tokens=max_tokens, temperature=temperature,
                                    usage=timer.usage)):
        pass
    return timer.result()
