"""A chat model behind any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, OpenAI...)
through the `openai` client. Every client error leaves as an LLMError naming the endpoint."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from rag.errors import LLMError
from rag.llm_timing import TokenUsage

log = logging.getLogger(__name__)


def root_cause(exc: BaseException) -> str:
    """The innermost reason of a connection failure ("Connection refused", "Name or service not known")."""
    reason: BaseException = exc
    seen = {id(exc)}
    while (nxt := reason.__cause__ or reason.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        reason = nxt
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return getattr(exc, "message", None) or str(exc)


def _client_errors() -> tuple[type[BaseException], ...]:
    """What the openai client may raise: its own errors, and raw transport errors of its HTTP
    library when a stream breaks mid-way (openai 3.x uses `httpx2`, older versions `httpx`)."""
    import openai

    errors: list[type[BaseException]] = [openai.OpenAIError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _fill_usage(usage: TokenUsage | None, reported: Any) -> None:
    """Copy a chunk's `usage` (an openai `CompletionUsage`, absent on most chunks) into `usage`."""
    if usage is None or reported is None:
        return
    if isinstance(reported.completion_tokens, int):
        usage.completion_tokens = reported.completion_tokens
    if isinstance(reported.prompt_tokens, int):
        usage.prompt_tokens = reported.prompt_tokens


class OpenAICompatLLM:
    """Chat completions (plain and streamed) from `base_url` (e.g. "http://host:8000/v1").

    `model` "default" or "" asks the endpoint's GET /models once and uses the first id.
    """

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None,
                 timeout: float = 120.0, max_retries: int = 1) -> None:
        if not base_url or not base_url.strip():
            raise LLMError("an OpenAI-compatible LLM needs a base_url (e.g. http://localhost:8000/v1)")
        self.base_url = base_url.strip().rstrip("/")
        self._model = (model or "").strip()
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        model = self._model if self._model and self._model != "default" else "default"
        return f"{model} @ {self.base_url}"

    def info(self) -> dict[str, Any]:
        return {"runtime": "openai-compatible", "base_url": self.base_url,
                "model": self._model or "default", "timeout_s": self.timeout}

    def warm_up(self) -> None:
        """Check that the endpoint answers and resolve the model id. Raises LLMError."""
        self._resolved_model()

    # -- internals ---------------------------------------------------------------------------
    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:
                    raise LLMError("the OpenAI-compatible LLM client needs `pip install openai`") from exc
                key = self._api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
                self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout,
                                             max_retries=self.max_retries)
            return self._client

    def _translate(self, exc: BaseException, *, streaming: bool = False) -> LLMError:
        import openai

        if streaming and not isinstance(exc, openai.APIStatusError):
            return LLMError(f"LLM endpoint {self.base_url} stream broke off: {root_cause(exc)}")
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"LLM endpoint {self.base_url} timed out after {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(f"LLM endpoint {self.base_url} unreachable: {root_cause(exc)}")
        if isinstance(exc, openai.APIStatusError):
            return LLMError(f"LLM endpoint {self.base_url} answered HTTP {exc.status_code}: {_status_message(exc)}")
        if not isinstance(exc, openai.OpenAIError):  # a transport error while reading a stream
            return LLMError(f"LLM endpoint {self.base_url} connection failed: {root_cause(exc)}")
        return LLMError(f"LLM endpoint {self.base_url} failed: {exc}")

    def _resolved_model(self) -> str:
        if self._model and self._model != "default":
            return self._model
        client = self._get_client()
        try:
            ids = [m.id for m in client.models.list()]
        except _client_errors() as exc:
            raise self._translate(exc) from exc
        if not ids:
            raise LLMError(f"LLM endpoint {self.base_url} lists no models; set the model name explicitly")
        self._model = ids[0]
        log.info("LLM endpoint %s: using model %s", self.base_url, self._model)
        return self._model

    def _request(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                 stop: list[str] | None, stream: bool) -> Any:
        model = self._resolved_model()
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens,
                                  "temperature": temperature, "stream": stream}
        if stop:
            kwargs["stop"] = list(stop)
        try:
            return self._get_client().chat.completions.create(**kwargs)
        except _client_errors() as exc:
            raise self._translate(exc) from exc

    # -- LLM protocol ------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        response = self._request(messages, max_tokens, temperature, stop, stream=False)
        if not response.choices:
            raise LLMError(f"LLM endpoint {self.base_url} returned no choices")
        return response.choices[0].message.content or ""

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
               stop: list[str] | None = None, usage: TokenUsage | None = None) -> Iterator[str]:
        """Text deltas. `usage` gets the counts of a `usage` object when the endpoint sends one in its
        last chunk (llama.cpp's server does; vLLM and OpenAI only when asked, which is not done here,
        because a strict endpoint may reject the `stream_options` field)."""
        response = self._request(messages, max_tokens, temperature, stop, stream=True)
        try:
            for chunk in response:
                _fill_usage(usage, getattr(chunk, "usage", None))
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except _client_errors() as exc:
            raise self._translate(exc, streaming=True) from exc
        finally:
            response.close()
