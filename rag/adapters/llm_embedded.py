"""The embedded default chat model: a GGUF run in-process on CPU by llama.cpp through `xllamacpp`.

By default the model is a bundled one (`rag.models.BUNDLED_LLMS`, chosen by RAG_LLM_EMBEDDED:
"small" Qwen2.5-Coder-0.5B-Instruct or "large" Qwen2.5-Coder-1.5B-Instruct, both Q4_K_M), joined
into the model cache on first use. The model loads on the first request and is shared by every
instance with the same (path, n_ctx, threads); one generation runs at a time per loaded model.

xllamacpp's `Server` also listens on a random 127.0.0.1 port (llama.cpp's HTTP server); we talk
to it in-process only and give that port a random API key so nothing else on the host can use it.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.adapters.llm_runtime import package_version, runtime_info
from rag.errors import LLMError, ModelError
from rag.llm_timing import TokenUsage
from rag.models import SMALL_LLM, BundledLLM, default_models_dir, resolve_bundled_gguf

log = logging.getLogger(__name__)



def bundled_llm_name(model: BundledLLM) -> str:
    return f"{model.filename.removesuffix('.gguf')} (embedded llama.cpp)"


BUNDLED_LLM_NAME = bundled_llm_name(SMALL_LLM)


@dataclass
class _Loaded:
    server: Any
    path: Path
    load_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)


_loaded: dict[tuple[str, int, int], _Loaded] = {}
_loaded_lock = threading.Lock()
_DONE = object()


def _load_server(path: Path, n_ctx: int, threads: int) -> Any:
    """Start llama.cpp on `path`. Raises ModelError when the runtime or the model cannot load."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise ModelError("the embedded LLM needs `pip install xllamacpp==2026.10.11549` "
                         "(or set RAG_LLM_BASE_URL to an OpenAI-compatible endpoint)") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads if threads > 0 else -1  # -1: llama.cpp picks (physical cores)
    params.cpuparams_batch.n_threads = threads if threads > 0 else -1
    params.verbosity = -1  # llama.cpp writes its own log to stderr otherwise
    params.api_keys = [secrets.token_urlsafe(24)]
    params.ui = False
    params.endpoint_slots = False
    params.cache_ram_mib = 256
    try:
        return xllamacpp.Server(params)
    except RuntimeError as exc:
        size = path.stat().st_size if path.exists() else None
        raise ModelError(f"llama.cpp cannot load the GGUF model {path} (size {size} bytes, "
                         f"n_ctx {n_ctx}): {exc}") from exc


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _fill_usage(usage: TokenUsage | None, timings: Any) -> None:
    if usage is None or not isinstance(timings, dict):
        return
    if isinstance(timings.get("predicted_n"), int):
        usage.completion_tokens = timings["predicted_n"]
    if isinstance(timings.get("prompt_n"), int):
        usage.prompt_tokens = timings["prompt_n"]


class EmbeddedLlamaLLM:
    """A GGUF chat model in this process. `gguf_path=None` uses the bundled model `bundled`, joined
    into `cache_dir` (default ~/.rag/models) on first use. `n_threads=0` lets llama.cpp choose.
    `cache_prompt`: llama.cpp keeps the KV cache of the previous prompt and evaluates only what
    follows the prefix a new prompt shares with it (the system prompt and worked example of every
    answer); off re-evaluates every prompt whole (benchmarks/prefix_cache.py measures both)."""

    def __init__(self, gguf_path: Path | str | None = None, n_ctx: int = 4096, n_threads: int = 0,
                 cache_dir: Path | None = None, *, cache_prompt: bool = True,
                 bundled: BundledLLM = SMALL_LLM) -> None:
        if n_ctx < 256:
            raise ModelError(f"n_ctx must be at least 256, got {n_ctx}")
        if n_threads < 0:
            raise ModelError(f"n_threads must be >= 0 (0 = automatic), got {n_threads}")
        self.gguf_path = Path(gguf_path).expanduser() if gguf_path else None
        if self.gguf_path is not None and not self.gguf_path.is_file():
            raise ModelError(f"GGUF model file not found: {self.gguf_path}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_models_dir()
        self.cache_prompt = cache_prompt
        self.bundled = bundled
        self.last_timings: dict[str, Any] = {}

    @property
    def name(self) -> str:
        if self.gguf_path is None:
            return bundled_llm_name(self.bundled)
        return f"{self.gguf_path.stem} (embedded llama.cpp)"

    def info(self) -> dict[str, Any]:
        loaded = _loaded.get(self._key())
        path = self._target()
        data: dict[str, Any] = {"runtime": f"llama.cpp (xllamacpp {package_version('xllamacpp')}), in-process",
                                "name": self.name, "path": str(path), "n_ctx": self.n_ctx,
                                "threads": self.n_threads or "auto"}
        if self.gguf_path is None:
            data["model"] = self.bundled.description
            data["embedded"] = self.bundled.key
        return runtime_info(data, loaded.load_s if loaded is not None else None, self.last_timings)

    def warm_up(self) -> None:
        """Join (bundled model) and load the model now rather than at the first request."""
        self._model()

    # -- internals ---------------------------------------------------------------------------
    def _path(self) -> Path:
        if self.gguf_path is not None:
            return self.gguf_path
        return resolve_bundled_gguf(self.cache_dir, model=self.bundled)

    def _target(self) -> Path:
        """Where the model file is, or will be once the bundled model is joined."""
        return self.gguf_path or self.cache_dir / self.bundled.filename

    def _key(self) -> tuple[str, int, int]:
        return (str(self._target().resolve()), self.n_ctx, self.n_threads)

    def _model(self) -> _Loaded:
        key = self._key()
        with _loaded_lock:
            if key in _loaded:
                return _loaded[key]
            path = self._path()
            start = time.perf_counter()
            server = _load_server(path, self.n_ctx, self.n_threads)
            entry = _Loaded(server=server, path=path, load_s=time.perf_counter() - start)
            _loaded[key] = entry
            log.info("loaded %s from %s in %.1f s (n_ctx %d, threads %s)", self.name, path, entry.load_s,
                     self.n_ctx, self.n_threads or "auto")
            return entry

    def _body(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
              stop: list[str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                                "cache_prompt": self.cache_prompt}
        if temperature <= 0:
            body.update(temperature=0.0, top_k=1, seed=0)  # greedy: the same prompt gives the same answer
        if stop:
            body["stop"] = list(stop)
        return body

    def _record(self, timings: Any) -> None:
        if isinstance(timings, dict):
            self.last_timings = timings
            log.debug("%s: prompt %s tok at %.0f tok/s, generated %s tok at %.1f tok/s", self.name,
                      timings.get("prompt_n"), timings.get("prompt_per_second") or 0, timings.get("predicted_n"),
                      timings.get("predicted_per_second") or 0)

    # -- LLM protocol ------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        model = self._model()
        with model.lock:
            try:
                result = model.server.handle_chat_completions(self._body(messages, max_tokens, temperature, stop))
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"embedded LLM rejected the request: {exc}") from exc
        if not isinstance(result, dict):
            raise LLMError(f"embedded LLM returned {type(result).__name__}, expected a JSON object")
        if "error" in result:
            raise LLMError(f"embedded LLM: {_error_text(result['error'])}")
        self._record(result.get("timings"))
        choices = result.get("choices") or []
        if not choices:
            raise LLMError("embedded LLM returned no choices")
        return (choices[0].get("message") or {}).get("content") or ""

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
               stop: list[str] | None = None, usage: TokenUsage | None = None) -> Iterator[str]:
        """Text deltas as llama.cpp produces them. Generation runs in a worker thread; closing the
        iterator early stops it at the next token. `usage` gets llama.cpp's predicted and prompt
        token counts (the last chunk's `timings`; `prompt_n` counts the prompt tokens evaluated, a
        prefix reused from the KV cache is left out)."""
        model = self._model()
        body = {**self._body(messages, max_tokens, temperature, stop), "stream": True}
        deltas: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            if cancel.is_set():
                return True
            if isinstance(chunk, dict) and "error" in chunk:
                deltas.put(LLMError(f"embedded LLM: {_error_text(chunk['error'])}"))
                return True
            for choice in (chunk.get("choices") or []) if isinstance(chunk, dict) else []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    deltas.put(text)
            if isinstance(chunk, dict) and "timings" in chunk:
                self._record(chunk["timings"])
                _fill_usage(usage, chunk["timings"])
            return False

        def work() -> None:
            try:
                with model.lock:
                    if not cancel.is_set():
                        model.server.handle_chat_completions(body, on_chunk)
            except (ValueError, RuntimeError) as exc:
                deltas.put(LLMError(f"embedded LLM rejected the request: {exc}"))
            finally:
                deltas.put(_DONE)

        worker = threading.Thread(target=work, name="embedded-llm-stream", daemon=True)
        worker.start()
        try:
            while (item := deltas.get()) is not _DONE:
                if isinstance(item, LLMError):
                    raise item
                yield item
        finally:
            cancel.set()
