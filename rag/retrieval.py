"""Hybrid retrieval: for every query variant a dense search and a BM25 search (top-k each,
the same metadata filter on both), fused by Reciprocal Rank Fusion with provenance.

All dense variants are embedded in one batch. A variant's lists are weighted by the list weight
(`dense_weight` / `bm25_weight`) times the variant's own weight (`original_query_weight` for the
original question); lists whose weight is 0 are not searched at all. With `fusion="confidence"`
(the default) the two lists of each variant are also weighted by their confidence for this query
(`rag.fusion.confidence_weights`): the list that singles out its top hit leads."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from rag.errors import InvalidRequest
from rag.fusion import Fused, RankedList, confidence_weights, rrf
from rag.transforms import Variant
from rag.types import Chunk, Filter, Hit, ScoredId

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("confidence", "rrf")


class SearchableKB(Protocol):
    """What retrieval needs from a knowledge base (`rag.kb.KnowledgeBase` provides it)."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def search_dense(self, vector: np.ndarray, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def search_bm25(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]: ...

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]: ...


class HybridRetriever:
    """The retrieval stage, built once: list weights and fusion defaults; the knowledge base (and
    a request's own `top_k` / `fusion`) come with each search."""

    def __init__(self, *, top_k: int = 30, rrf_k: int = 60, dense_weight: float = 1.0,
                 bm25_weight: float = 1.0, fusion: str = "confidence", fusion_depth: int = 30,
                 fusion_power: float = 16.0, fusion_agreement_depth: int = 10) -> None:
        _check_top_k(top_k)
        _check_fusion(fusion)
        self.top_k = top_k
        self.rrf_k = rrf_k
        self.weights = {"dense": dense_weight, "bm25": bm25_weight}
        self.fusion, self.fusion_depth, self.fusion_power = fusion, fusion_depth, fusion_power
        self.fusion_agreement_depth = fusion_agreement_depth

    def search(self, kb: SearchableKB, variants: Sequence[Variant], *, mode: str = "hybrid",
               flt: Filter | None = None, timings: dict[str, float] | None = None, top_k: int | None = None,
               fusion: str | None = None) -> list[Fused]:
        """Fused ranking (best first) of every chunk of `kb` found by any list. `top_k` and `fusion`
        override this retriever's for one search. Fills `timings` with embed, dense, bm25 and
        fusion seconds."""
        top_k = self.top_k if top_k is None else _check_top_k(top_k)
        fusion = self.fusion if fusion is None else _check_fusion(fusion)
        if mode not in MODES:
            raise InvalidRequest(f"unknown retrieval mode {mode!r}; choose from {list(MODES)}", field="mode")
        timings = timings if timings is not None else {}
        flt = None if flt is None or flt.is_empty() else flt
        wanted = {"dense", "bm25"} if mode == "hybrid" else {mode}
        plan = [(name, v) for v in variants for name in v.lists
                if name in wanted and self.weights[name] * v.weight > 0]
        lists: list[RankedList] = []

        dense = [v for name, v in plan if name == "dense"]
        started = time.perf_counter()
        vectors = kb.embed_queries([v.text for v in dense]) if dense else np.zeros((0, 0), np.float32)
        timings["embed"] = time.perf_counter() - started

        started = time.perf_counter()
        for v, vector in zip(dense, vectors):
            items = kb.search_dense(vector, top_k, flt)
            lists.append(RankedList("dense", v.label, items, self.weights["dense"] * v.weight))
        timings["dense"] = time.perf_counter() - started

        started = time.perf_counter()
        for name, v in plan:
            if name == "bm25":
                items = kb.search_bm25(v.text, top_k, flt)
                lists.append(RankedList("bm25", v.label, items, self.weights["bm25"] * v.weight))
        timings["bm25"] = time.perf_counter() - started

        started = time.perf_counter()
        if fusion == "confidence":
            lists = self._confidence_weighted(lists)
        fused = rrf(lists, k=self.rrf_k)
        timings["fusion"] = time.perf_counter() - started
        log.debug("retrieval: %d lists, %d fused hits", len(lists), len(fused))
        return fused

    def _confidence_weighted(self, lists: list[RankedList]) -> list[RankedList]:
        """Each variant's lists weighted by their confidence against each other (order kept)."""
        by_variant: dict[str, list[int]] = {}
        for i, ranked in enumerate(lists):
            by_variant.setdefault(ranked.variant, []).append(i)
        out = list(lists)
        for idx in by_variant.values():
            group = [lists[i] for i in idx]
            weighted = confidence_weights(group, self.fusion_depth, self.fusion_power, self.fusion_agreement_depth)
            for i, ranked in zip(idx, weighted):
                out[i] = ranked
        return out

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
