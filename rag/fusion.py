"""Reciprocal Rank Fusion: score(d) = sum over lists of weight / (k + rank(d)), rank from 1."""

from __future__ import annotations

from collections.abc import Sequence
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
    ordered = sorted(fused.values(), key=lambda f: (-f.score, best_rank[f.chunk_id], f.chunk_id))
    return ordered[:limit] if limit is not None else ordered
