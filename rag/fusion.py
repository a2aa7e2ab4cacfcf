"""Fusion of ranked lists: the convex combination of min-max normalised scores (the default,
`fusion = "convex"`) and Reciprocal Rank Fusion (`fusion = "rrf"`).

Convex combination (Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval",
ACM TOIS 2023): each list's scores are scaled to 0..1 over its own retrieved head (top 1, bottom
0), and a chunk's fused score is the sum over lists of share(list) x weight x its scaled score (0
where a list did not retrieve it); the dense list's share is `alpha`, the BM25 list's 1 - alpha.
Unlike RRF it keeps how far apart the scores are, so a list that clearly separates its top hits
leads where it does, without any per-query rule. alpha = 0.4 won the worst case over six datasets
of both kinds (BM25-friendly COVID-QA and CMRC 2018, dense-friendly RGB news sets) in
`benchmarks/fusion.py` (docs/benchmarks.md, "Fusion"); the confidence-weighted RRF it replaced
lost there and was deleted.

RRF: score(d) = sum over lists of weight / (k + rank(d)), rank from 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rag.types import ListHit, ScoredId


@dataclass(frozen=True)
class RankedList:
    """One ranked list to fuse: its retriever, the query variant it answered, and a weight."""

    list_name: str
    variant: str
    items: Sequence[ScoredId]
    weight: float = 1.0


@dataclass
class Fused:
    chunk_id: str
    score: float
    provenance: list[ListHit]


def rrf(lists: Sequence[RankedList], k: int = 60, limit: int | None = None) -> list[Fused]:
    """Fuse ranked lists. A chunk that appears twice in one list counts once, at its best rank.
    Ties are broken by the best single rank, then by chunk id, so the order is deterministic."""
    if k < 1:
        raise ValueError(f"RRF constant k must be >= 1, got {k}")
    fused: dict[str, Fused] = {}
    best_rank: dict[str, int] = {}
    for ranked in lists:
        seen: set[str] = set()
        rank = 0
        for item in ranked.items:
            if item.chunk_id in seen:
                continue
            seen.add(item.chunk_id)
            rank += 1
            entry = fused.get(item.chunk_id)
            if entry is None:
                entry = fused[item.chunk_id] = Fused(item.chunk_id, 0.0, [])
            entry.score += ranked.weight / (k + rank)
            entry.provenance.append(ListHit(ranked.list_name, ranked.variant, rank, item.score))
            best_rank[item.chunk_id] = min(best_rank.get(item.chunk_id, rank), rank)
    return _ordered(fused, best_rank, limit)


def min_max(ranked: RankedList) -> dict[str, tuple[float, float]]:
    """chunk id -> (score, the score scaled to 0..1 over the list's own items), in list order; a
    chunk listed twice keeps its first (best) score, and a list whose scores are all equal scales
    every item to 1."""
    scores: dict[str, float] = {}
    for item in ranked.items:
        scores.setdefault(item.chunk_id, float(item.score))
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return {cid: (s, 1.0) for cid, s in scores.items()}
    return {cid: (s, (s - lo) / (hi - lo)) for cid, s in scores.items()}


def convex(lists: Sequence[RankedList], shares: Mapping[str, float], limit: int | None = None) -> list[Fused]:
    """Fuse ranked lists by the convex combination of their min-max normalised scores:
    score(d) = sum over lists of shares[list_name] x weight x min_max(list)[d] (0 where the list
    did not retrieve d); a list whose name is not in `shares` has share 1. Ties are broken by
    the best single rank, then by chunk id, as in `rrf`."""
    fused: dict[str, Fused] = {}
    best_rank: dict[str, int] = {}
    for ranked in lists:
        share = ranked.weight * shares.get(ranked.list_name, 1.0)
        for rank, (cid, (score, scaled)) in enumerate(min_max(ranked).items(), start=1):
            entry = fused.get(cid)
            if entry is None:
                entry = fused[cid] = Fused(cid, 0.0, [])
            entry.score += share * scaled
            entry.provenance.append(ListHit(ranked.list_name, ranked.variant, rank, score))
            best_rank[cid] = min(best_rank.get(cid, rank), rank)
    return _ordered(fused, best_rank, limit)


def _ordered(fused: dict[str, Fused], best_rank: dict[str, int], limit: int | None) -> list[Fused]:
    """Best fused score first; ties by the best single rank, then by chunk id (deterministic)."""
    ordered = sorted(fused.values(), key=lambda f: (-f.score, best_rank[f.chunk_id], f.chunk_id))
    return ordered[:limit] if limit is not None else ordered
