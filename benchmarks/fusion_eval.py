"""The offline part of `benchmarks/fusion.py`: fusion variants over cached lists, chosen on the
dev halves of all datasets together, reported on the test halves with paired bootstrap
intervals. The query path's fusions (`rag.fusion.convex`, `rag.fusion.rrf`) fuse with its own
code; the z-score and top-scaled normalisations are benchmark-only candidates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.fusion import (METRICS, Data, Query, Ranker, bootstrap, evaluate_ranker, plain_rrf, single,
                               split)
from rag.fusion import RankedList, convex
from rag.settings import Settings
from rag.types import ScoredId

Normaliser = Callable[[Sequence[ScoredId]], tuple[dict[str, float], float]]


def by_convex(alpha: float, top_k: int = 30) -> Ranker:
    """The query path's fusion: `rag.fusion.convex` of the first `top_k` of each list."""
    def rank(data: Data, q: Query) -> list[str]:
        lists = [RankedList("dense", "original", q.dense[:top_k]), RankedList("bm25", "original", q.bm25[:top_k])]
        return [f.chunk_id for f in convex(lists, {"dense": alpha, "bm25": 1.0 - alpha})]
    return rank


def z_score(items: Sequence[ScoredId]) -> tuple[dict[str, float], float]:
    """(chunk -> standardised score, the value of a chunk the list did not retrieve: its lowest)."""
    s = np.array([i.score for i in items], float)
    z = (s - s.mean()) / s.std() if len(s) and s.std() > 0 else np.zeros_like(s)
    return {i.chunk_id: float(v) for i, v in zip(items, z)}, float(z.min()) if len(z) else 0.0


def top_scaled(items: Sequence[ScoredId]) -> tuple[dict[str, float], float]:
    """(chunk -> score / top score, 0): a theoretical minimum of 0 for both lists."""
    top = items[0].score if items and items[0].score > 0 else 1.0
    return {i.chunk_id: i.score / top for i in items}, 0.0


def by_normalised(alpha: float, normalise: Normaliser, top_k: int) -> Ranker:
    def rank(data: Data, q: Query) -> list[str]:
        (d, d_floor), (b, b_floor) = normalise(q.dense[:top_k]), normalise(q.bm25[:top_k])
        fused = {c: alpha * d.get(c, d_floor) + (1 - alpha) * b.get(c, b_floor) for c in {*d, *b}}
        return sorted(fused, key=lambda c: (-fused[c], c))
    return rank


@dataclass
class Variant:
    name: str
    lever: str  # the family it belongs to ("baseline", ...)
    ranker: Ranker


ALPHAS = [round(0.3 + 0.05 * i, 2) for i in range(13)]  # 0.3 .. 0.9


def variants() -> list[Variant]:
    out = [Variant("bm25", "baseline", single("bm25")), Variant("dense", "baseline", single("dense")),
           Variant("rrf", "rrf", plain_rrf())]
    for wd in (0.5, 1.5, 2.0, 3.0, 4.0):
        out.append(Variant(f"rrf dense weight {wd:g}", "rrf, fixed list weights", plain_rrf(dense_w=wd)))
    for tk in (30, 100):
        for a in ALPHAS:
            out.append(Variant(f"convex alpha {a:g}" + ("" if tk == 30 else f", top_k {tk}"), "convex, min-max",
                               by_convex(a, tk)))
    for label, normalise in (("z-score", z_score), ("top-scaled", top_scaled)):
        for tk in (30, 100):
            for a in ALPHAS:
                out.append(Variant(f"convex {label} alpha {a:g}, top_k {tk}", f"convex, {label}",
                                   by_normalised(a, normalise, tk)))
    return out


def _margins(scores: dict[str, dict[str, dict[str, float]]], name: str) -> list[float]:
    out = []
    for ds, row in scores[name].items():
        for m in METRICS:
            out.append(row[m] - max(scores["bm25"][ds][m], scores["dense"][ds][m]))
    return out


def settings_default() -> str:
    """The grid name of the fusion the settings default to (`rag.settings.Settings`)."""
    fields = Settings.model_fields
    assert fields["fusion"].default == "convex" and fields["top_k"].default == 30
    return f"convex alpha {fields['fusion_alpha'].default:g}"


def run_evaluation(datas: Sequence[Data], seed: int) -> str:
    """Markdown: dev selection per lever, then test tables per dataset for the settings default
    (the row every interval is computed against), the baselines and the best setting of each lever."""
    vs = variants()
    default = settings_default()
    assert default in {v.name for v in vs}, default
    halves = {d.name: split([q.qid for q in d.queries], seed) for d in datas}
    dev: dict[str, dict[str, dict[str, float]]] = {}
    test: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for v in vs:
        for d in datas:
            dv, ts = halves[d.name]
            dev.setdefault(v.name, {})[d.name] = {m: float(x.mean()) for m, x in
                                                  evaluate_ranker(d, v.ranker, dv).items()}
            test.setdefault(v.name, {})[d.name] = evaluate_ranker(d, v.ranker, ts)
    key = {v.name: (round(min(_margins(dev, v.name)), 3), float(np.mean(_margins(dev, v.name)))) for v in vs}
    best_of: dict[str, str] = {}
    for v in vs:
        if v.lever != "baseline" and (v.lever not in best_of or key[v.name] > key[best_of[v.lever]]):
            best_of[v.lever] = v.name
    lever_of = {v.name: v.lever for v in vs}
    picked = max((n for n in key if lever_of[n] != "baseline"), key=lambda n: key[n])
    sizes = ", ".join(f"{d.name}: {len(halves[d.name][0])} dev / {len(halves[d.name][1])} test" for d in datas)
    lines = [f"Queries split in halves with seed {seed}; {sizes}.",
             "", "### Dev halves: best of each lever (worst margin over the better single list, all datasets "
             "and both metrics, to 3 decimals; the mean margin breaks ties)", "",
             "| lever | best setting on dev | worst margin | mean margin | worst margin per dataset |",
             "|---|---|---:|---:|---|"]
    for lever, name in best_of.items():
        per = ", ".join(f"{d.name} {min(_margins({name: {d.name: dev[name][d.name]}, 'bm25': dev['bm25'], 'dense': dev['dense']}, name)):+.3f}"
                        for d in datas)
        lines.append(f"| {lever} | {name} | {key[name][0]:+.3f} | {key[name][1]:+.4f} | {per} |")
    lines += ["", f"Best worst-case margin on dev: **{picked}**; the settings default: **{default}**"
              f"{' (the same)' if picked == default else ''}.", ""]
    rows = ["bm25", "dense", "rrf", default, *[n for n in best_of.values() if n not in ("rrf", default)]]
    for d in datas:
        n_test = len(halves[d.name][1])
        header = "| config | MRR@10 | nDCG@10 | default − config, MRR@10 [95 % CI] | default − config, nDCG@10 [95 % CI] |"
        lines += [f"### {d.name} — test half, {n_test} queries, {d.level} level", "", header,
                  "|---|---:|---:|---:|---:|"]
        for name in rows:
            res = test[name][d.name]
            cells = []
            for m in METRICS:
                if name == default:
                    cells.append("–")
                    continue
                diff = test[default][d.name][m] - res[m]
                lo, hi = bootstrap(diff)
                cells.append(f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
            label = f"**{name}** (default)" if name == default else name
            lines.append(f"| {label} | {res['mrr@10'].mean():.3f} | {res['ndcg@10'].mean():.3f} | "
                         f"{cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["run_evaluation", "variants"]
