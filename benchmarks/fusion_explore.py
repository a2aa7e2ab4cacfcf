"""Scratch exploration of fusion variants on cached lists (not part of the report)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fusion import evaluate_ranker, load, plain_rrf, single, split  # noqa: E402
from rag.fusion import RankedList, rrf  # noqa: E402


def zconf(scores, n=10):
    s = np.asarray(scores[:n], float)
    if len(s) < 3:
        return 0.0
    rest = s[1:]
    sd = rest.std()
    return float((s[0] - rest.mean()) / sd) if sd > 0 else 0.0


def gapconf(scores, n=10):
    s = np.asarray(scores[:n], float)
    if len(s) < 2 or s[0] == s[-1]:
        return 0.0
    return float((s[0] - s[1]) / (s[0] - s[-1]))


def spread(scores, n=10):
    s = np.asarray(scores[:n], float)
    if len(s) < 2:
        return 0.0
    return float((s[0] - s[-1]) / abs(s[0])) if s[0] else 0.0


SIGNALS = {"z": zconf, "gap": gapconf, "spread": spread}


def adaptive(sig="z", n=10, p=1.0, top_k=30, prior_d=1.0, floor=0.0, mode="max"):
    f = SIGNALS[sig]

    def rank(data, q):
        cd = max(f([h.score for h in q.dense], n), 1e-9)
        cb = max(f([h.score for h in q.bm25], n), 1e-9)
        if mode == "max":
            m = max(cd, cb)
            wd, wb = (cd / m) ** p, (cb / m) ** p
        else:
            wd, wb = cd ** p, cb ** p
        wd, wb = max(wd, floor) * prior_d, max(wb, floor)
        lists = [RankedList("dense", "o", q.dense[:top_k], wd), RankedList("bm25", "o", q.bm25[:top_k], wb)]
        return [x.chunk_id for x in rrf(lists)]
    return rank


def main():
    names = sys.argv[1].split(",")
    datas = [load(n, Path("runs/fusion")) for n in names]
    variants = {"bm25": single("bm25"), "dense": single("dense"), "rrf": plain_rrf()}
    for tk in (50, 100):
        variants[f"rrf-d{tk}"] = plain_rrf(top_k=tk)
    for wd in (0.3, 0.5, 2, 3, 5):
        variants[f"rrf-wd{wd}"] = plain_rrf(dense_w=wd)
    for sig in SIGNALS:
        for n in (10, 30):
            for p in (1, 2, 4):
                variants[f"ad-{sig}-n{n}-p{p}"] = adaptive(sig, n, p)
    for tk in (10, 20, 50, 100):
        variants[f"ad-z-n10-p2-k{tk}"] = adaptive("z", 10, 2, top_k=tk)
    for pd in (1.5, 2.0):
        variants[f"ad-z-n10-p2-pd{pd}"] = adaptive("z", 10, 2, prior_d=pd)
    res = {}
    for d in datas:
        dev, test = split([q.qid for q in d.queries], 13)
        for name, r in variants.items():
            m = evaluate_ranker(d, r, dev)
            res.setdefault(name, {})[d.name] = {k: float(v.mean()) for k, v in m.items()}
    header = "variant".ljust(24) + "".join(f"{d.name[:10]:>12}{'':>8}" for d in datas) + "  worst-margin"
    print(header)
    for name in variants:
        cells, margins = "", []
        for d in datas:
            r = res[name][d.name]
            best = {m: max(res["bm25"][d.name][m], res["dense"][d.name][m]) for m in r}
            margins += [r[m] - best[m] for m in r]
            cells += f"{r['mrr@10']:>10.3f}/{r['ndcg@10']:.3f}  "
        print(name.ljust(24) + cells + f"  {min(margins):+.3f} {np.mean(margins):+.3f}")


if __name__ == "__main__":
    main()
