"""The offline part of `benchmarks/fusion.py`: fusion variants over cached lists, chosen on the
dev halves of all datasets together, reported on the test halves with paired bootstrap
intervals. Every variant fuses with the query path's own code (`rag.fusion`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.fusion import (METRICS, Data, Query, Ranker, bootstrap, evaluate_ranker, plain_rrf, single,
                               split)
from rag.fusion import RankedList, confidence_weights, rrf
from rag.settings import Settings
from rag.types import ScoredId


def adaptive(top_k: int = 30, depth: int = 10, power: float = 4.0, agreement: int = 0,
             dense_w: float = 1.0) -> Ranker:
    """RRF with per-query confidence weights (`rag.fusion.confidence_weights`)."""
    def rank(data: Data, q: Query) -> list[str]:
        lists = [RankedList("dense", "original", q.dense[:top_k], dense_w),
                 RankedList("bm25", "original", q.bm25[:top_k], 1.0)]
        return [f.chunk_id for f in rrf(confidence_weights(lists, depth, power, agreement))]
    return rank


def with_doc_list(top_k: int, depth: int, power: float, agreement: int, doc_w: float) -> Ranker:
    """Adaptive RRF plus document-level evidence: documents ranked by their best fused chunk,
    and every chunk also earns doc_w / (60 + its document's rank) (a third RRF list in which
    the chunks of one document share their document's rank)."""
    def rank(data: Data, q: Query) -> list[str]:
        lists = [RankedList("dense", "original", q.dense[:top_k]), RankedList("bm25", "original", q.bm25[:top_k])]
        fused = {f.chunk_id: f.score for f in rrf(confidence_weights(lists, depth, power, agreement))}
        doc_rank: dict[str, int] = {}
        for cid in sorted(fused, key=lambda c: (-fused[c], c)):
            doc_rank.setdefault(data.chunk_doc.get(cid, cid), len(doc_rank) + 1)
        for cid in fused:
            fused[cid] += doc_w / (60 + doc_rank[data.chunk_doc.get(cid, cid)])
        return sorted(fused, key=lambda c: (-fused[c], c))
    return rank


@dataclass
class Variant:
    name: str
    lever: str  # the family it belongs to ("baseline", "depth", ...)
    ranker: Ranker


def variants() -> list[Variant]:
    out = [Variant("bm25", "baseline", single("bm25")), Variant("dense", "baseline", single("dense")),
           Variant("rrf (old default: top_k 30, equal weights)", "baseline", plain_rrf())]
    for tk in (10, 20, 50, 100):
        out.append(Variant(f"rrf top_k {tk}", "deeper or shallower lists", plain_rrf(top_k=tk)))
    for wd in (0.25, 0.5, 2.0, 4.0):
        out.append(Variant(f"rrf dense weight {wd:g}", "fixed list weights", plain_rrf(dense_w=wd)))
    for depth in (10, 30):
        for power in (2.0, 4.0, 8.0, 16.0):
            out.append(Variant(f"confidence depth {depth} power {power:g}", "confidence weights",
                               adaptive(30, depth, power)))
    for depth in (10, 30):
        for power in (4.0, 8.0, 16.0, 32.0):
            for agree in (5, 10, 20):
                out.append(Variant(f"confidence depth {depth} power {power:g} agreement {agree}",
                                   "confidence x disagreement", adaptive(30, depth, power, agree)))
    for tk in (50, 100):
        for power in (8.0, 16.0):
            out.append(Variant(f"confidence depth 30 power {power:g} agreement 10, top_k {tk}",
                               "confidence x disagreement, deeper lists", adaptive(tk, 30, power, 10)))
    for wd in (0.5, 1.5, 2.0):
        out.append(Variant(f"confidence depth 30 power 16 agreement 10 + dense weight {wd:g}",
                           "confidence x disagreement + fixed weights", adaptive(30, 30, 16.0, 10, dense_w=wd)))
    for dw in (0.25, 0.5, 1.0):
        out.append(Variant(f"confidence depth 30 power 16 agreement 10 + document list {dw:g}",
                           "document-level evidence", with_doc_list(30, 30, 16.0, 10, dw)))
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
    assert fields["fusion"].default == "confidence" and fields["top_k"].default == 30
    return (f"confidence depth {fields['fusion_depth'].default} power {fields['fusion_power'].default:g} "
            f"agreement {fields['fusion_agreement_depth'].default}")


def run_evaluation(datas: Sequence[Data], seed: int) -> str:
    """Markdown: dev selection per lever, then test tables per dataset for the settings default
    (the row every interval is computed against) and the best setting of each lever."""
    vs = variants()
    default = settings_default()
    if default not in {v.name for v in vs}:
        vs.append(Variant(default, "settings default", adaptive(30, *_parse_default(default))))
    halves = {d.name: split([q.qid for q in d.queries], seed) for d in datas}
    dev: dict[str, dict[str, dict[str, float]]] = {}
    test: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for v in vs:
        for d in datas:
            dv, ts = halves[d.name]
            dev.setdefault(v.name, {})[d.name] = {m: float(x.mean()) for m, x in
                                                  evaluate_ranker(d, v.ranker, dv).items()}
            test.setdefault(v.name, {})[d.name] = evaluate_ranker(d, v.ranker, ts)
    key = {v.name: (min(_margins(dev, v.name)), float(np.mean(_margins(dev, v.name)))) for v in vs}
    best_of: dict[str, str] = {}
    for v in vs:
        if v.lever != "baseline" and (v.lever not in best_of or key[v.name] > key[best_of[v.lever]]):
            best_of[v.lever] = v.name
    lever_of = {v.name: v.lever for v in vs}
    picked_any = max((n for n in key if lever_of[n] != "baseline"), key=lambda n: key[n])
    prior_free = [n for n in key if lever_of[n] != "baseline" and "fixed" not in lever_of[n]]
    picked = max(prior_free, key=lambda n: key[n])
    chosen = default
    sizes = ", ".join(f"{d.name}: {len(halves[d.name][0])} dev / {len(halves[d.name][1])} test" for d in datas)
    lines = [f"Queries split in halves with seed {seed}; {sizes}.",
             "", "### Dev halves: best of each lever (worst and mean margin over the better single list, "
             "all datasets and both metrics)", "",
             "| lever | best setting on dev | worst margin | mean margin |", "|---|---|---:|---:|"]
    for lever, name in best_of.items():
        lines.append(f"| {lever} | {name} | {key[name][0]:+.4f} | {key[name][1]:+.4f} |")
    lines += ["", f"Best worst-case margin on dev among rules without a fixed list preference: **{picked}**; "
              f"the settings default: **{default}**{' (the same)' if picked == default else ''}. "
              f"Best including fixed list weights: {picked_any} ({key[picked_any][0]:+.4f} / "
              f"{key[picked_any][1]:+.4f}).", ""]
    rows = ["bm25", "dense", "rrf (old default: top_k 30, equal weights)", chosen,
            *[n for n in best_of.values() if n != chosen]]
    for d in datas:
        n_test = len(halves[d.name][1])
        header = "| config | MRR@10 | nDCG@10 | new − config, MRR@10 [95 % CI] | new − config, nDCG@10 [95 % CI] |"
        lines += [f"### {d.name} — test half, {n_test} queries, {d.level} level", "", header,
                  "|---|---:|---:|---:|---:|"]
        for name in rows:
            res = test[name][d.name]
            cells = []
            for m in METRICS:
                if name == chosen:
                    cells.append("–")
                    continue
                diff = test[chosen][d.name][m] - res[m]
                lo, hi = bootstrap(diff)
                cells.append(f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
            label = f"**{name}** (new default)" if name == chosen else name
            lines.append(f"| {label} | {res['mrr@10'].mean():.3f} | {res['ndcg@10'].mean():.3f} | "
                         f"{cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def _parse_default(name: str) -> tuple[int, float, int]:
    words = name.split()
    return int(words[2]), float(words[4]), int(words[6])


__all__ = ["ScoredId", "run_evaluation", "variants"]
