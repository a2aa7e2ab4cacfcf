"""What the in-process LLM adapters (llama.cpp, transformers) report in `info()` alike."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from typing import Any


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def runtime_info(data: dict[str, Any], load_s: float | None, last_timings: Mapping[str, Any]) -> dict[str, Any]:
    """`data` plus whether the model is loaded, its load time and the last call's timings."""
    data["loaded"] = load_s is not None
    if load_s is not None:
        data["load_s"] = round(load_s, 2)
    if last_timings:
        data["last_timings"] = dict(last_timings)
    return data
