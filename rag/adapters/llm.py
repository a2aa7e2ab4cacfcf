"""The generation model behind the `LLM` protocol: an OpenAI-compatible endpoint when a base URL
is configured, else a local transformers model directory when one is configured (the GPU path
without a vLLM endpoint), else the embedded llama.cpp model. Implementations live in `llm_openai`,
`llm_transformers`, `llm_embedded`; each imports its runtime lazily. The test double `ScriptedLLM` lives in
`llm_fake` and is imported from there, never through production code."""

from __future__ import annotations

from pathlib import Path

from rag.adapters.llm_embedded import BUNDLED_LLM_NAME, EmbeddedLlamaLLM
from rag.adapters.llm_openai import OpenAICompatLLM
from rag.models import DEFAULT_EMBEDDED_LLM, bundled_llm
from rag.protocols import LLM

__all__ = ["BUNDLED_LLM_NAME", "EmbeddedLlamaLLM", "OpenAICompatLLM", "make_llm"]


def make_llm(base_url: str | None = None, model: str = "default", api_key: str | None = None,
             timeout: float = 120.0, gguf_path: Path | str | None = None, n_ctx: int = 4096,
             threads: int = 0, *, model_dir: Path | None = None, local_model: Path | str | None = None,
             device: str = "auto", embedded: str = DEFAULT_EMBEDDED_LLM) -> LLM:
    """`base_url` set -> OpenAICompatLLM; else `local_model` set -> TransformersLLM on that
    directory and `device`; otherwise EmbeddedLlamaLLM on `gguf_path`, or on the bundled model named
    `embedded` ("small" | "large") joined into `model_dir` (default ~/.rag/models). Nothing loads here."""
    if base_url and base_url.strip():
        return OpenAICompatLLM(base_url, model=model, api_key=api_key, timeout=timeout)
    if local_model is not None and str(local_model).strip():
        from rag.adapters.llm_transformers import TransformersLLM

        return TransformersLLM(local_model, device=device, n_ctx=n_ctx)
    return EmbeddedLlamaLLM(gguf_path=gguf_path, n_ctx=n_ctx, n_threads=threads, cache_dir=model_dir,
                            bundled=bundled_llm(embedded))
