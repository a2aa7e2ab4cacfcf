"""The fusion's dense share α learnt per knowledge base from verified answers ("learning from use").

Which list ranks better is mostly a property of the collection and of how its users ask (BM25 on
COVID-QA's rare biomedical terms, dense on news questions), and no label-free signal measured in
issue 33 told them apart (docs/benchmarks.md, "Fusion"). The citation verifier does: every answered
question whose cited sentences it found supported names chunks that were useful. For each such
answer the retrieval's fused candidates are kept with the two parts of their convex score (dense
and BM25, each list's min-max scaled score times its weights, `rag.fusion.Fused.parts`) and which of
them were useful; the knowledge base's α is then the one of `GRID` under which the useful chunks
rank highest (mean over answers of 1 / the best useful chunk's rank; ties go to the α nearest the
configured `fusion_alpha`), once `MIN_ANSWERS` answers are kept; before that the configured α
holds. The last `KEEP` answers are kept, so α follows the collection and its users as they change.

Simulated on six datasets with the verifier's bias (a question labels only chunks that reached the
prompt), ~25-100 answers moved α to 0.6-0.8 on dense-friendly news sets and kept it at 0.3-0.4 on
COVID-QA (`benchmarks/fusion_calibration.py`); `benchmarks/fusion_learning.py` measures it end to
end through the answer path.

One small JSON file per collection under `<data_dir>/fusion/` (keyed by collection, so a reindex
into a new collection starts afresh), written whole under an exclusive `flock`, re-read when
another process changed it; `rag drop` deletes it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.names import BM25, DENSE

log = logging.getLogger(__name__)

GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the α measured (a list alone is never better than both)
MIN_ANSWERS = 25  # answers before α moves: the simulation's n = 25 gained on every dense-friendly set
KEEP = 200  # answers kept per collection (the oldest go first)
CANDIDATES = 60  # fused candidates kept per answer (2 lists x top_k 30)


@dataclass(frozen=True)
class LearnedAlpha:
    """A knowledge base's α and what it rests on: `answers` verified answers (0: the configured α)."""

    alpha: float
    answers: int

    @property
    def learned(self) -> bool:
        return self.answers > 0

    def info(self) -> dict[str, Any]:
        return {"fusion_alpha": self.alpha, "fusion_alpha_answers": self.answers}


def useful_rank(parts: Sequence[tuple[float, float]], useful: Iterable[int], alpha: float) -> int:
    """1 + how many candidates score above the best useful one at `alpha` (score α·d + (1 − α)·b)."""
    scores = [alpha * d + (1.0 - alpha) * b for d, b in parts]
    best = max(scores[i] for i in useful)
    return 1 + sum(1 for s in scores if s > best + 1e-12)


def choose_alpha(samples: Sequence[Mapping[str, Any]], default: float) -> float:
    """The α of GRID under which the useful chunks of `samples` rank highest (mean reciprocal rank);
    ties go to the α nearest `default`."""
    def utility(alpha: float) -> float:
        return sum(1.0 / useful_rank(s["parts"], s["useful"], alpha) for s in samples) / len(samples)
    return max(GRID, key=lambda a: (round(utility(a), 9), -abs(a - default)))


class FusionLearner:
    """Keeps the verified answers' samples per collection and the α they give."""

    def __init__(self, folder: Path, default_alpha: float) -> None:
        self.folder = Path(folder)
        self.default_alpha = default_alpha
        self._cache: dict[str, tuple[float, LearnedAlpha]] = {}  # collection -> (file mtime, α)
        self._guard = threading.Lock()

    def _path(self, collection: str) -> Path:
        return self.folder / f"{collection}.json"

    def alpha(self, collection: str) -> LearnedAlpha:
        """The collection's α: learned once MIN_ANSWERS answers are kept, else the configured one."""
        path = self._path(collection)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return LearnedAlpha(self.default_alpha, 0)
        with self._guard:
            cached = self._cache.get(collection)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        learned = self._learned(self._read(path))
        with self._guard:
            self._cache[collection] = (mtime, learned)
        return learned

    def kept(self, collection: str) -> int:
        """How many verified answers the collection keeps (α moves once MIN_ANSWERS are kept)."""
        return len(self._read(self._path(collection)))

    def record(self, collection: str, candidates: Sequence[tuple[str, Mapping[str, float]]],
               useful: Iterable[str]) -> LearnedAlpha | None:
        """Keep one verified answer: `candidates` are the fused chunks, best first, with their
        parts by list name; `useful` the chunks the verifier found supporting the answer. Nothing
        is kept (None) when no useful chunk is among the candidates."""
        kept = candidates[:CANDIDATES]
        wanted = set(useful)
        hits = [i for i, (cid, _) in enumerate(kept) if cid in wanted]
        if not hits:
            return None
        sample = {"parts": [[round(p.get(DENSE, 0.0), 5), round(p.get(BM25, 0.0), 5)] for _, p in kept],
                  "useful": hits}
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(collection)
        with self._locked(collection):
            samples = self._read(path)
            samples = [*samples, sample][-KEEP:]
            learned = self._learned(samples)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"samples": samples, "alpha": learned.alpha, "answers": learned.answers}))
            os.replace(tmp, path)
        with self._guard:
            self._cache.pop(collection, None)
        return learned

    def forget(self, collection: str) -> None:
        """Delete what the collection learned (its knowledge base was dropped)."""
        with self._locked(collection):
            self._path(collection).unlink(missing_ok=True)
        self._path(collection).with_suffix(".lock").unlink(missing_ok=True)
        with self._guard:
            self._cache.pop(collection, None)

    def _learned(self, samples: Sequence[Mapping[str, Any]]) -> LearnedAlpha:
        if len(samples) < MIN_ANSWERS:
            return LearnedAlpha(self.default_alpha, 0)
        return LearnedAlpha(choose_alpha(samples, self.default_alpha), len(samples))

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        """The kept samples; none when the file is missing or unreadable (a damaged file starts afresh)."""
        try:
            data = json.loads(path.read_text())
            samples = data["samples"]
            return [s for s in samples if s["useful"] and all(0 <= i < len(s["parts"]) for i in s["useful"])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("fusion samples %s unreadable (%s): starting afresh", path, exc)
            return []

    @contextmanager
    def _locked(self, collection: str) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{collection}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
