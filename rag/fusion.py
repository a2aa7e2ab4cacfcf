"""Reciprocal Rank Fusion: score(d) = sum over lists of weight / (k + rank(d)), rank from 1.

With `confidence_weights` (the default fusion, `fusion = "confidence"`) the weight of each list
is also scaled per query by how sure that list is of its own top hit: the standardised margin of
its top score over the rest of its head, a score-based query performance predictor in the spirit
of WIG (Zhou & Croft, 2007) and NQC (Shtok et al., 2012), used the way DAT (Hsu & Tzeng, 2025)
uses an LLM's verdict on each list's top hit. A list whose head is flat (it cannot tell its
candidates apart: BM25 over same-topic passages, a weak embedder on a specialised vocabulary)
and that disagrees with a surer list gives way to it; lists that agree fuse as plain RRF.
Measured in `benchmarks/fusion.py` (docs/benchmarks.md, "Fusion")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

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


def list_confidence(scores: Sequence[float], depth: int = 30) -> float | None:
    """How far the top score of a list stands out from the rest of its first `depth` scores, in
    standard deviations: (s1 - mean(s2..sn)) / std(s2..sn). Invariant to the scale and offset of
    the scores, so cosine similarities and BM25 scores compare. 0.0 when the head is flat;
    None when the list has fewer than 3 scores (too short to judge)."""
    head = [float(s) for s in scores[:depth]]
    if len(head) < 3:
        return None
    rest = head[1:]
    mean = sum(rest) / len(rest)
    std = math.sqrt(sum((x - mean) ** 2 for x in rest) / len(rest))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return 0.0 if head[0] - mean <= 1e-12 * max(1.0, abs(mean)) else math.inf
    return max(0.0, (head[0] - mean) / std)


def top_overlap(a: RankedList, b: RankedList, depth: int = 10) -> float:
    """Share of the first `depth` chunks two lists have in common, over the shorter head (0..1)."""
    head_a = {i.chunk_id for i in a.items[:depth]}
    head_b = {i.chunk_id for i in b.items[:depth]}
    shorter = min(len(head_a), len(head_b))
    return len(head_a & head_b) / shorter if shorter else 0.0


def confidence_weights(lists: Sequence[RankedList], depth: int = 30, power: float = 16.0,
                       agreement_depth: int = 10) -> list[RankedList]:
    """The lists with each weight multiplied by (confidence / the best confidence) ** p
    (`list_confidence` over `depth` scores), so the most confident list keeps its weight and a
    less confident one is damped. p = `power`, or with `agreement_depth` > 0
    p = power * (1 - overlap), the overlap (`top_overlap`) of the list's first `agreement_depth`
    chunks with the most confident list's: a list that agrees with the most confident one is
    left as it is (plain RRF), one that disagrees gives way by its confidence; a list with a flat
    head (confidence 0) gets weight 0. A list too short to judge keeps its weight; when no list
    has a positive confidence, all weights stay as they are."""
    if power < 0 or depth < 3 or agreement_depth < 0:
        raise ValueError(f"confidence weighting needs power >= 0, depth >= 3 and agreement_depth >= 0, "
                         f"got {power}, {depth}, {agreement_depth}")
    conf = [list_confidence([i.score for i in ranked.items], depth) for ranked in lists]
    known = [c for c in conf if c is not None]
    best = max(known, default=0.0)
    if best <= 0.0:
        return list(lists)
    leader = lists[conf.index(best)]
    out = []
    for ranked, c in zip(lists, conf):
        if c is None or ranked is leader:
            out.append(ranked)
            continue
        exponent = power * (1.0 - top_overlap(ranked, leader, agreement_depth)) if agreement_depth else power
        if c == 0.0:
            factor = 0.0  # a flat head says nothing about order, whatever it shares with the leader
        elif math.isinf(best):
            factor = 1.0 if math.isinf(c) else 0.0 ** exponent
        else:
            factor = (c / best) ** exponent
        out.append(replace(ranked, weight=ranked.weight * factor))
    return out
