"""Pure helpers of the side-by-side driver (`compare.py`): run order, per-round spread, per-query
scoring, paired comparisons (bootstrap interval, exact McNemar) and the dense-list check."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eval.metrics import chunk_contains_answer, paired_bootstrap, retrieval_metrics

PAIRED_METRICS = ("mrr@10", "ndcg@10", "hit@5")
NEAR_TIE = 1e-6  # two cosine scores this close are one float32 value apart at most: their order is noise


def round_order(systems: Sequence[str], seed: int, round_no: int) -> list[str]:
    """The systems in this round's run order: a seeded shuffle per round, reproducible."""
    order = list(systems)
    random.Random(f"{seed}/{round_no}").shuffle(order)
    return order


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def per_query_quality(rankings: Mapping[str, Sequence[str | None]], qids: Sequence[str], chunks: Mapping[str, dict],
                      answers: Mapping[str, Sequence[Any]], top_k: int = 10) -> dict[str, Any]:
    """hit@1/5/10, MRR@10 and nDCG@10 of `rankings` ({qid: chunk ids}) over `qids` (in that order):
    a chunk is relevant when it comes from a gold answer's document and contains the answer (text
    match); a None in a ranking (a chunk already listed, see `scaled.to_origin`) is not relevant.
    Returns `{"aggregate": {...}, "per_query": [{...}, ...]}`."""
    relevance = []
    for qid in qids:
        golds = answers[qid]
        relevance.append([cid is not None and chunk_contains_answer(chunks[cid]["doc_id"], None, None,
                                                                    chunks[cid]["text"], golds)
                          for cid in list(rankings.get(qid, []))[:top_k]])
    result = retrieval_metrics(relevance, [1] * len(qids), ks=(1, 5, 10), recall_ks=(), rank_k=10)
    return {"aggregate": result["aggregate"], "per_query": result["per_query"]}


def mcnemar_exact(ours: Sequence[float], peer: Sequence[float]) -> dict[str, float | int]:
    """Exact McNemar test on paired binary outcomes (e.g. hit@5): `b` = queries ours hits and the
    peer misses, `c` = the reverse; p = two-sided exact binomial test of b out of b + c at 1/2."""
    if len(ours) != len(peer):
        raise ValueError(f"paired outcomes of unequal length: {len(ours)} and {len(peer)}")
    b = sum(1 for x, y in zip(ours, peer) if x and not y)
    c = sum(1 for x, y in zip(ours, peer) if y and not x)
    if b + c == 0:
        return {"b": 0, "c": 0, "p": 1.0}
    from scipy.stats import binomtest

    return {"b": b, "c": c, "p": float(binomtest(b, b + c, 0.5).pvalue)}


def paired_comparison(ours: Sequence[Mapping[str, float]], peer: Sequence[Mapping[str, float]],
                      resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Per metric of PAIRED_METRICS: the paired bootstrap of ours - peer (mean, 95% interval,
    wins/ties/losses of ours); McNemar on hit@5."""
    out: dict[str, Any] = {}
    for metric in PAIRED_METRICS:
        out[metric] = paired_bootstrap([r[metric] for r in peer], [r[metric] for r in ours],
                                       resamples=resamples, seed=seed)
    out["mcnemar_hit@5"] = mcnemar_exact([r["hit@5"] for r in ours], [r["hit@5"] for r in peer])
    return out


def tie_classes(chunks: Mapping[str, dict]) -> dict[str, str]:
    """Chunk id -> the first id (in `chunks` order) with the same text: chunks with identical text
    have identical vectors, so their order in a dense list is an exact tie each store breaks its
    own way."""
    first: dict[str, str] = {}
    return {cid: first.setdefault(row["text"], cid) for cid, row in chunks.items()}


def list_agreement(reference: Mapping[str, Sequence[str]], other: Mapping[str, Sequence[str]],
                   qids: Sequence[str], top_k: int = 10, ties: Mapping[str, str] | None = None,
                   near_tie: Callable[[str, str, str], bool] | None = None) -> dict[str, Any]:
    """How often two systems' lists (e.g. dense top-k) are identical: the share of queries with the
    same ids in the same order, the share with the same set (order differs), the share identical
    once tied chunks count as equal (`ties`: chunk -> its class of identical texts, see
    `tie_classes`; `near_tie(qid, a, b)`: scores equal within float32 resolution), and the first
    query that differs in order, with both lists."""
    def same(qid: str, a: list[str], b: list[str]) -> bool:
        if ties is None and near_tie is None or set(a) != set(b):
            return False
        return all(x == y or (ties is not None and ties.get(x, x) == ties.get(y, y))
                   or (near_tie is not None and near_tie(qid, x, y)) for x, y in zip(a, b))

    same_order = same_set = same_but_ties = 0
    first: dict[str, Any] | None = None
    for qid in qids:
        a, b = list(reference.get(qid, []))[:top_k], list(other.get(qid, []))[:top_k]
        if a == b:
            same_order += 1
            same_set += 1
            same_but_ties += 1
            continue
        if set(a) == set(b):
            same_set += 1
        if same(qid, a, b):
            same_but_ties += 1
        if first is None:
            first = {"qid": qid, "reference": a, "other": b,
                     "first_rank": next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))}
    n = len(qids)
    return {"n": n, "identical": same_order / n if n else 1.0, "same_set": same_set / n if n else 1.0,
            "identical_but_ties": same_but_ties / n if n else 1.0,
            "first_difference": first}


def rankings_stable(rounds: Sequence[Mapping[str, Sequence[str]]]) -> bool:
    """True when every round returned the same ranking for every query."""
    return all(dict(r) == dict(rounds[0]) for r in rounds[1:])
