"""A larger local chat model run in-process by transformers, for a GPU host without a vLLM endpoint
(`RAG_LLM_LOCAL_MODEL=<model directory>`, e.g. a downloaded Qwen2.5-7B-Instruct).

The device is resolved like the embedders' (`auto`: CUDA when torch sees a GPU, else CPU); on CUDA
the weights load in bfloat16 when the GPU supports it, else float16; on CPU and MPS in float32.
Nothing loads until the first request (or `warm_up()`); a loaded model is shared by every instance
with the same (path, device, dtype), and one generation runs at a time per loaded model. `stream`
runs `generate` in a worker thread and reads a `TextIteratorStreamer`; closing the iterator early
stops generation at the next token. For serving many users at once, use vLLM instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.adapters.device import resolve_device
from rag.adapters.llm_runtime import package_version, runtime_info
from rag.errors import ConfigError, LLMError, ModelError
from rag.llm_timing import TokenUsage

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16")


def choose_dtype(device: str, requested: str = "auto") -> str:
    """The weight dtype for `device`: as requested, else bfloat16 on a CUDA GPU that supports it,
    float16 on an older CUDA GPU, float32 on CPU and MPS."""
    if requested not in DTYPES:
        raise ConfigError(f"unknown dtype {requested!r}; use one of {list(DTYPES)}", field="dtype")
    if requested != "auto":
        return requested
    if not device.startswith("cuda"):
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    max_positions: int | None
    load_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)


_loaded: dict[tuple[str, str, str], _Loaded] = {}
_loaded_lock = threading.Lock()


def _load(path: Path, device: str, dtype: str) -> _Loaded:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError("a local transformers LLM needs `pip install torch transformers`") from exc
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the local LLM {path} with transformers: {exc}") from exc
    model.to(device).eval()
    max_positions = getattr(model.config, "max_position_embeddings", None)
    return _Loaded(model, tokenizer, device, dtype, max_positions, time.perf_counter() - start)


class _StopTrimmer:
    """Cuts streamed text at the first stop string, holding back a possible partial match."""

    def __init__(self, stop: list[str] | None) -> None:
        self.stop = [s for s in (stop or []) if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.buffer += text
        cut = min((i for i in (self.buffer.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.stopped = self.buffer[:cut], "", True
            return out
        keep = len(self.buffer) - self.hold
        out, self.buffer = (self.buffer[:keep], self.buffer[keep:]) if keep > 0 else ("", self.buffer)
        return out

    def finish(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


class TransformersLLM:
    """`LLM` on a local transformers causal-LM directory. `n_ctx` bounds prompt + answer tokens
    (also bounded by the model's own `max_position_embeddings`)."""

    def __init__(self, model_path: Path | str, device: str = "auto", dtype: str = "auto", n_ctx: int = 4096) -> None:
        self.model_path = Path(model_path).expanduser()
        if not (self.model_path / "config.json").is_file():
            raise ModelError(f"local LLM directory {self.model_path} has no config.json "
                             f"(RAG_LLM_LOCAL_MODEL must be a transformers model directory)")
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {list(DTYPES)}", field="dtype")
        if n_ctx < 256:
            raise ModelError(f"n_ctx must be at least 256, got {n_ctx}")
        self.device_spec, self.dtype_spec, self.n_ctx = device, dtype, n_ctx
        self.last_timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        return f"{self.model_path.name} (transformers)"

    def info(self) -> dict[str, Any]:
        loaded = next((v for k, v in _loaded.items() if k[0] == str(self.model_path.resolve())), None)
        data: dict[str, Any] = {"runtime": f"transformers {package_version('transformers')}, in-process",
                                "name": self.name, "path": str(self.model_path),
                                "device": loaded.device if loaded else self.device_spec,
                                "dtype": loaded.dtype if loaded else self.dtype_spec, "n_ctx": self.n_ctx}
        return runtime_info(data, loaded.load_s if loaded is not None else None, self.last_timings)

    def warm_up(self) -> None:
        self._model()

    # -- internals ---------------------------------------------------------------------------
    def _model(self) -> _Loaded:
        device = resolve_device(self.device_spec)
        dtype = choose_dtype(device, self.dtype_spec)
        key = (str(self.model_path.resolve()), device, dtype)
        with _loaded_lock:
            if key not in _loaded:
                _loaded[key] = _load(self.model_path, device, dtype)
                log.info("loaded %s on %s (%s) in %.1f s", self.name, device, dtype, _loaded[key].load_s)
            return _loaded[key]

    def _inputs(self, m: _Loaded, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        tok = m.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        else:  # a base model without a chat template: a plain transcript
            text = "".join(f"{msg['role']}: {msg['content']}\n" for msg in messages) + "assistant:"
            enc = tok(text, return_tensors="pt")
        n_prompt = int(enc["input_ids"].shape[1])
        limit = min(self.n_ctx, m.max_positions or self.n_ctx)
        if n_prompt + max_tokens > limit:
            raise LLMError(f"prompt of {n_prompt} tokens + {max_tokens} answer tokens exceeds the context of "
                           f"{limit} tokens of {self.name}")
        return {k: enc[k].to(m.device) for k in ("input_ids", "attention_mask") if k in enc}

    def _generate_kwargs(self, m: _Loaded, inputs: dict[str, Any], max_tokens: int, temperature: float,
                         stop: list[str] | None, cancel: threading.Event | None) -> dict[str, Any]:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        tok = m.tokenizer
        n_prompt = int(inputs["input_ids"].shape[1])
        stops = [x for x in (stop or []) if x]
        window = max((len(x) for x in stops), default=0) + 8  # tokens: at least one character each

        class _Stop(StoppingCriteria):
            """Cancelled by the reader, or a stop string in the generated text (never the prompt)."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = cancel is not None and cancel.is_set()
                if not done and stops:
                    tail = input_ids[0, max(n_prompt, input_ids.shape[1] - window):]
                    text = tok.decode(tail, skip_special_tokens=True)
                    done = any(x in text for x in stops)
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        eos = m.model.generation_config.eos_token_id if m.model.generation_config else None
        config = GenerationConfig(max_new_tokens=max_tokens, do_sample=temperature > 0,
                                  eos_token_id=eos if eos is not None else tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        if temperature > 0:
            config.temperature = temperature
        return {**inputs, "generation_config": config, "stopping_criteria": StoppingCriteriaList([_Stop()])}

    def _record(self, n_prompt: int, n_out: int, first_s: float | None, total_s: float) -> None:
        self.last_timings = {"prompt_n": n_prompt, "predicted_n": n_out, "total_s": round(total_s, 3),
                             "predicted_per_second": round(n_out / total_s, 2) if total_s > 0 else 0.0}
        if first_s is not None:
            self.last_timings["first_token_s"] = round(first_s, 3)

    # -- LLM protocol ------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        import torch

        m = self._model()
        inputs = self._inputs(m, messages, max_tokens)
        n_prompt = int(inputs["input_ids"].shape[1])
        start = time.perf_counter()
        with m.lock, torch.inference_mode():
            try:
                out = m.model.generate(**self._generate_kwargs(m, inputs, max_tokens, temperature, stop, None))
            except (RuntimeError, ValueError) as exc:
                raise LLMError(f"{self.name} failed to generate: {exc}") from exc
        new = out[0, n_prompt:]
        self._record(n_prompt, int(new.shape[0]), None, time.perf_counter() - start)
        trimmer = _StopTrimmer(stop)
        text = m.tokenizer.decode(new, skip_special_tokens=True)
        return trimmer.feed(text) + trimmer.finish()

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
               stop: list[str] | None = None, usage: TokenUsage | None = None) -> Iterator[str]:
        """Text deltas; `usage` gets the prompt and generated token counts."""
        import torch
        from transformers import TextIteratorStreamer

        m = self._model()
        inputs = self._inputs(m, messages, max_tokens)
        n_prompt = int(inputs["input_ids"].shape[1])
        cancel = threading.Event()
        streamer = TextIteratorStreamer(m.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {**self._generate_kwargs(m, inputs, max_tokens, temperature, stop, cancel), "streamer": streamer}
        errors: list[BaseException] = []
        produced: list[int] = []

        def work() -> None:
            finished = False
            try:
                with m.lock, torch.inference_mode():
                    out = m.model.generate(**kwargs)
                produced.append(int(out.shape[1]) - n_prompt)
                if usage is not None:
                    usage.prompt_tokens, usage.completion_tokens = n_prompt, produced[0]
                finished = True
            except (RuntimeError, ValueError) as exc:
                errors.append(exc)
            finally:
                if not finished:
                    if not errors:
                        errors.append(LLMError("generation stopped unexpectedly (see the log)"))
                    streamer.end()  # wake the reader; it raises below

        start = time.perf_counter()
        first: float | None = None
        trimmer = _StopTrimmer(stop)
        worker = threading.Thread(target=work, name="transformers-llm-stream", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if errors:
                    break
                text = trimmer.feed(piece)
                if text:
                    first = first if first is not None else time.perf_counter() - start
                    yield text
                if trimmer.stopped:
                    break
            if errors:
                raise LLMError(f"{self.name} failed to generate: {errors[0]}") from errors[0]
            tail = trimmer.finish()
            if tail:
                yield tail
        finally:
            cancel.set()  # stops generate at the next token when the reader leaves early
            worker.join()
            self._record(n_prompt, produced[0] if produced else 0, first, time.perf_counter() - start)
