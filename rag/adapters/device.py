"""Which torch device a model runs on. `torch` is imported only when the answer needs it."""

from __future__ import annotations

import re

from rag.errors import ConfigError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def check_device(spec: str = "auto") -> str:
    """The device spec normalised ("auto", "cpu", "cuda", "cuda:N", "mps"), without importing torch:
    what model resolution checks before anything loads. Raises ConfigError for an unknown value."""
    value = (spec or "auto").strip().lower()
    if value != "auto" and not _DEVICE.match(value):
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps", field="device")
    return value


def resolve_device(spec: str = "auto") -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cpu", "cuda", "cuda:N" and "mps"
    are checked and returned as given. Raises ConfigError for unknown values or a GPU that
    torch cannot see."""
    value = check_device(spec)
    if value == "cpu":
        return "cpu"
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but torch sees no CUDA GPU "
                              f"(torch {torch.__version__})", field="device")
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) visible",
                              field="device")
    if value == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but torch reports MPS unavailable", field="device")
    return value
