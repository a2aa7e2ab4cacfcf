"""`ScriptedLLM`: a deterministic stand-in for the LLM protocol in tests. No model, no network."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rag.llm_timing import TokenUsage

Messages = list[dict[str, str]]

# a delta is a run of spaces plus one word, or one CJK character (which has no spaces between words)
_CJK = "\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef"
_DELTA = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}]+)|\s+")


def split_deltas(text: str) -> list[str]:
    """Word-sized deltas whose concatenation is exactly `text`."""
    return _DELTA.findall(text)


class ScriptedLLM:
    """Replies from a script: a sequence (one reply per call, in order) or a function of the
    messages. A reply that is an exception instance is raised instead (to simulate LLMError).
    Every call is recorded in `calls` as a dict (messages, max_tokens, temperature, stop, stream).
    `stop` strings cut the reply like a real endpoint does. Running out of replies is a test bug:
    AssertionError (unless `default` is given). `delta_seconds`: a pause before each streamed
    delta, so that time to first token and per token have a size."""

    def __init__(self, replies: Sequence[str | BaseException] | Callable[[Messages], str] = (), *,
                 default: str | None = None, name: str = "scripted-llm", delta_seconds: float = 0.0) -> None:
        self._replies = replies if callable(replies) else list(replies)
        self._default = default
        self._name = name
        self._delta_seconds = delta_seconds
        self.calls: list[dict[str, Any]] = []
        self.warm_ups = 0  # how often warm_up() ran, for tests of server start

    @property
    def name(self) -> str:
        return self._name

    def warm_up(self) -> None:
        """Nothing to load; counted."""
        self.warm_ups += 1

    def info(self) -> dict[str, Any]:
        return {"runtime": "scripted (test double)", "name": self._name, "calls": len(self.calls)}

    @property
    def last_messages(self) -> Messages:
        assert self.calls, "ScriptedLLM was never called"
        return self.calls[-1]["messages"]

    def _next(self, messages: Messages, max_tokens: int, temperature: float, stop: list[str] | None,
              stream: bool) -> str:
        self.calls.append({"messages": [dict(m) for m in messages], "max_tokens": max_tokens,
                           "temperature": temperature, "stop": list(stop) if stop else None, "stream": stream})
        if callable(self._replies):
            reply: str | BaseException = self._replies(messages)
        else:
            index = len(self.calls) - 1
            if index < len(self._replies):
                reply = self._replies[index]
            elif self._default is not None:
                reply = self._default
            else:
                raise AssertionError(f"ScriptedLLM has {len(self._replies)} scripted replies; call #{index + 1} "
                                     "has none (pass more replies or default=...)")
        if isinstance(reply, BaseException):
            raise reply
        for marker in stop or ():
            if marker and marker in reply:
                reply = reply[: reply.index(marker)]
        return reply

    def chat(self, messages: Messages, *, max_tokens: int = 512, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        return self._next(messages, max_tokens, temperature, stop, stream=False)

    def stream(self, messages: Messages, *, max_tokens: int = 512, temperature: float = 0.0,
               stop: list[str] | None = None, usage: TokenUsage | None = None) -> Iterator[str]:
        """The reply in word-sized deltas; `usage` counts one output token per delta."""
        reply = self._next(messages, max_tokens, temperature, stop, stream=True)
        deltas = split_deltas(reply)
        for delta in deltas:
            if self._delta_seconds > 0:
                time.sleep(self._delta_seconds)
            yield delta
        if usage is not None:
            usage.completion_tokens = len(deltas)
