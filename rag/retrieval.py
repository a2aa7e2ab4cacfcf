"""Hybrid retrieval: for every query variant one search per named list (`SEARCHERS`: dense and
BM25, top-k each, the same metadata filter on all), fused with provenance.

All dense variants are embedded in one batch. A variant's lists are weighted by the list weight
(`weights[name]`, from `dense_weight` / `bm25_weight`) times the variant's own weight (`original_query_weight` for the
original question); lists whose weight is 0 are not searched at all. `fusion="convex"` (the
default) adds each list's min-max normalised scores, the dense list's with share `fusion_alpha`
and BM25's with 1 - fusion_alpha (`rag.fusion.convex`); `fusion="rrf"` is Reciprocal Rank Fusion."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from rag.errors import InvalidRequest
from rag.fusion import Fused, RankedList, convex, rrf
from rag.names import BM25, DENSE, FUSIONS, HYBRID
from rag.transforms import Variant
from rag.types import Chunk, Filter, Hit, ScoredId

log = logging.getLogger(__name__)


class SearchableKB(Protocol):
    """What retrieval needs from a knowledge base (`rag.kb.KnowledgeBase` provides it)."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def search_dense(self, vector: np.ndarray, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def search_bm25(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]: ...


class Searcher(Protocol):
    """One named retrieval list: a ranking per query text, batch first. May add timings of its own
    sub-steps (the dense list adds `embed`); the retriever times the whole call under the list's name."""

    def search(self, kb: SearchableKB, texts: Sequence[str], top_k: int, flt: Filter | None,
               timings: dict[str, float]) -> list[list[ScoredId]]: ...


class DenseSearcher:
    """Embeds every text in one batch, then one vector search each."""

    def search(self, kb: SearchableKB, texts: Sequence[str], top_k: int, flt: Filter | None,
               timings: dict[str, float]) -> list[list[ScoredId]]:
        started = time.perf_counter()
        vectors = kb.embed_queries(list(texts)) if texts else np.zeros((0, 0), np.float32)
        timings["embed"] = time.perf_counter() - started
        return [kb.search_dense(vector, top_k, flt) for vector in vectors]


class BM25Searcher:
    def search(self, kb: SearchableKB, texts: Sequence[str], top_k: int, flt: Filter | None,
               timings: dict[str, float]) -> list[list[ScoredId]]:
        return [kb.search_bm25(text, top_k, flt) for text in texts]


# the lists every retriever knows, in fusion order; a new list is a name in rag/names.py, a
# Searcher here and a weight setting
SEARCHERS: dict[str, Searcher] = {DENSE: DenseSearcher(), BM25: BM25Searcher()}


class HybridRetriever:
    """The retrieval stage, built once: the named lists with their weights and the fusion
    defaults; the knowledge base (and a request's own `top_k` / `fusion`) come with each search."""

    def __init__(self, *, top_k: int = 30, rrf_k: int = 60, weights: Mapping[str, float] | None = None,
                 searchers: Mapping[str, Searcher] | None = None, fusion: str = "convex",
                 fusion_alpha: float = 0.4) -> None:
        _check_top_k(top_k)
        _check_fusion(fusion)
        self.searchers = dict(SEARCHERS if searchers is None else searchers)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.searchers))
        if unknown:
            raise InvalidRequest(f"weights for unknown retrieval list(s) {unknown}; lists: {list(self.searchers)}",
                                 field="weights")
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.searchers}
        self.top_k = top_k
        self.rrf_k = rrf_k
        if not 0.0 <= fusion_alpha <= 1.0:
            raise InvalidRequest(f"fusion_alpha must be within 0..1, got {fusion_alpha}", field="fusion_alpha")
        self.fusion, self.fusion_alpha = fusion, fusion_alpha

    def check_mode(self, mode: str) -> None:
        """Raise InvalidRequest unless `mode` is hybrid or one of this retriever's lists."""
        if mode != HYBRID and mode not in self.searchers:
            raise InvalidRequest(f"unknown retrieval mode {mode!r}; choose from {[HYBRID, *self.searchers]}",
                                 field="mode")

    def search(self, kb: SearchableKB, variants: Sequence[Variant], *, mode: str = HYBRID,
               flt: Filter | None = None, timings: dict[str, float] | None = None, top_k: int | None = None,
               fusion: str | None = None) -> list[Fused]:
        """Fused ranking (best first) of every chunk of `kb` found by any list. `top_k` and `fusion`
        override this retriever's for one search. Fills `timings` with each list's seconds under
        its name (the dense list also `embed`) and `fusion`."""
        top_k = self.top_k if top_k is None else _check_top_k(top_k)
        fusion = self.fusion if fusion is None else _check_fusion(fusion)
        self.check_mode(mode)
        timings = timings if timings is not None else {}
        flt = None if flt is None or flt.is_empty() else flt
        plan = self.plan(variants, mode)
        lists: list[RankedList] = []
        for name, searcher in self.searchers.items():
            started = time.perf_counter()
            planned = plan[name]
            steps: dict[str, float] = {}
            rankings = searcher.search(kb, [v.text for v in planned], top_k, flt, steps)
            lists += [RankedList(name, v.label, items, self.weights[name] * v.weight)
                      for v, items in zip(planned, rankings)]
            timings.update(steps)
            timings[name] = time.perf_counter() - started - sum(steps.values())

        started = time.perf_counter()
        if fusion == "convex":
            fused = convex(lists, {DENSE: self.fusion_alpha, BM25: 1.0 - self.fusion_alpha})
        else:
            fused = rrf(lists, k=self.rrf_k)
        timings["fusion"] = time.perf_counter() - started
        log.debug("retrieval: %d lists, %d fused hits", len(lists), len(fused))
        return fused

    def plan(self, variants: Sequence[Variant], mode: str = HYBRID) -> dict[str, list[Variant]]:
        """The variants each named list searches, in fusion order (an empty list is not searched:
        another mode, a list the variant skips, or a weight of 0)."""
        wanted = tuple(self.searchers) if mode == HYBRID else (mode,)
        return {name: [v for v in variants if name in wanted and name in v.lists and self.weights[name] * v.weight > 0]
                for name in self.searchers}

    @staticmethod
    def hits(kb: SearchableKB, fused: Sequence[Fused]) -> list[Hit]:
        """Load the chunks of fused entries from `kb`, keeping their order; entries whose chunk
        vanished (deleted between search and fetch) are dropped."""
        chunks = kb.get_chunks([f.chunk_id for f in fused])
        missing = [f.chunk_id for f in fused if f.chunk_id not in chunks]
        if missing:
            log.warning("%d retrieved chunk(s) have no stored payload (deleted meanwhile?): %s", len(missing),
                        ", ".join(missing[:3]))
        return [Hit(chunks[f.chunk_id], f.score, list(f.provenance)) for f in fused if f.chunk_id in chunks]


def _check_top_k(top_k: int) -> int:
    if top_k < 1:
        raise InvalidRequest(f"top_k must be >= 1, got {top_k}", field="top_k")
    return top_k


def _check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise InvalidRequest(f"unknown fusion {fusion!r}; choose from {list(FUSIONS)}", field="fusion")
    return fusion


# -- filters ---------------------------------------------------------------------------------

_LIST_KEYS = {"source": "sources", "sources": "sources", "doc_id": "doc_ids", "doc": "doc_ids", "doc_ids": "doc_ids"}
_TIME_KEYS = {"mtime_from": "mtime_from", "date_from": "mtime_from", "from": "mtime_from", "after": "mtime_from",
              "mtime_to": "mtime_to", "date_to": "mtime_to", "to": "mtime_to", "before": "mtime_to"}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def filter_pairs(filters: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """The API's filter shapes as `key=value` strings for `parse_filter`:
    `{"source": ["a", "b"], "team": "hr"}` -> ["source=a", "source=b", "team=hr"]; a list passes."""
    if not filters:
        return []
    if not isinstance(filters, Mapping):
        return [str(f) for f in filters]
    pairs = []
    for key, value in filters.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{key}={item}")
    return pairs


def parse_filter(pairs: Sequence[str]) -> Filter:
    """A Filter from `key=value` strings. Keys: `source` and `doc_id` (repeat for any-of),
    `tag=key=value` or any other `key=value` (a tag; all must match), `mtime_from` / `mtime_to`
    (aliases `from`, `to`, `date_from`, `date_to`, `after`, `before`): unix seconds or an ISO date /
    datetime in local time unless it names a zone; a date-only `mtime_to` includes that whole day.
    Raises InvalidRequest naming the bad pair."""
    sources: list[str] = []
    doc_ids: list[str] = []
    tags: list[str] = []
    times: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise InvalidRequest(f"invalid filter {pair!r}: use key=value (e.g. source=report.pdf, team=hr, "
                                 "mtime_from=2024-01-01)", field="filter")
        if key in _LIST_KEYS:
            (sources if _LIST_KEYS[key] == "sources" else doc_ids).append(value)
        elif key in _TIME_KEYS:
            times[_TIME_KEYS[key]] = _parse_time(pair, value, end_of_day=_TIME_KEYS[key] == "mtime_to")
        else:
            if key in ("tag", "tags"):
                key, sep, value = value.partition("=")
                key, value = key.strip(), value.strip()
                if not sep or not key or not value:
                    raise InvalidRequest(f"invalid filter {pair!r}: a tag filter is tag=key=value", field="filter")
            tags.append(f"{key}={value}")
    mtime_from, mtime_to = times.get("mtime_from"), times.get("mtime_to")
    if mtime_from is not None and mtime_to is not None and mtime_from > mtime_to:
        raise InvalidRequest(f"invalid filter: mtime_from ({mtime_from}) is after mtime_to ({mtime_to})",
                             field="filter")
    return Filter(sources=tuple(dict.fromkeys(sources)), doc_ids=tuple(dict.fromkeys(doc_ids)),
                  tags=tuple(dict.fromkeys(tags)), mtime_from=mtime_from, mtime_to=mtime_to)


def _parse_time(pair: str, value: str, *, end_of_day: bool) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"invalid filter {pair!r}: {value!r} is neither unix seconds nor an ISO date "
                             "(YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])", field="filter") from None
    if end_of_day and _DATE_ONLY.match(value):
        moment += timedelta(days=1, microseconds=-1)
    return moment.timestamp()
