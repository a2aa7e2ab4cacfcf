"""Reuse of the prompt's fixed prefix in the embedded model's KV cache (issue 16): time to first token
with llama.cpp's `cache_prompt` on (the default) against off, on the same real answer prompts.

    . .venv/bin/activate
    python benchmarks/prefix_cache.py --dataset cmrc2018 --questions 12 --rounds 2 --out runs/prefix_cache.json

Every answer prompt starts with the same system prompt and worked example; only the sources and the
question differ. With `cache_prompt` llama.cpp keeps the previous prompt's KV cache and evaluates only
the tokens after the prefix the new prompt shares with it. The prompts are built as the pipeline builds
them (`rag.generation.pack_context` + `build_messages`, the default answer style) over controlled
contexts of k passages (the question's own passage among BM25 hard negatives, as `rag eval
--robustness` makes them), sampled from the test half. One pass asks every question once with one
setting; passes alternate on, off, on, off, ... (`--rounds` pairs), each after one untimed request with
a question not measured (so the cache holds a prompt sharing only the fixed prefix), so drift on a shared
machine hits both alike. Generation stops after `--max-tokens` tokens: the quantity
measured is the prompt's evaluation, read as TTFT and as llama.cpp's own `prompt_n` (tokens evaluated)
and `cache_n` (tokens taken from the cache) per request. Results: per-setting p50/mean TTFT, the ratio
on/off of the paired per-question medians with a bootstrap interval, and the token counts."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from eval.contexts import ContextBuilder  # noqa: E402
from eval.datasets import load_dataset  # noqa: E402
from eval.robustness import trials  # noqa: E402
from rag.adapters.llm_embedded import EmbeddedLlamaLLM  # noqa: E402
from rag.generation import Layout, build_messages, context_budget, pack_context  # noqa: E402
from rag.llm_timing import StreamTimer  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.transforms import question_language  # noqa: E402

log = logging.getLogger("bench.prefix_cache")


def prompts(dataset_name: str, n: int, k: int, seed: int, window: int, settings: Settings) -> list[dict[str, Any]]:
    """The real answer prompts of `n` test-half questions over k-passage contexts (40 % noise)."""
    dataset = load_dataset(dataset_name, keep_text="all")
    builder = ContextBuilder(dataset, window)
    out = []
    try:
        for qid in dataset.sample(None, seed, "test"):
            if len(out) >= n:
                break
            if qid not in dataset.answer_keys:
                continue
            found = trials(builder, qid, k=k, ratios=(0.4,), seed=seed, skipped={})
            noise = [t for t in found if t.test == "noise"]
            if not noise:
                continue
            question = dataset.queries[qid]
            lang = question_language(question)
            budget = context_budget(settings.llm_context_window, settings.llm_max_tokens, question, lang,
                                    layout=Layout())
            packed = pack_context([p.hit() for p in noise[0].passages], budget=budget,
                                  max_sources=settings.context_top_n, lang=lang)
            out.append({"qid": qid, "messages": build_messages(question, packed.sources, lang, Layout())})
    finally:
        builder.close()
    return out


def ask(llm: EmbeddedLlamaLLM, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    timer = StreamTimer()
    started = time.perf_counter()
    for _ in timer.watch(llm.stream(messages, max_tokens=max_tokens, temperature=0.0, usage=timer.usage)):
        pass
    gen = timer.result()
    t = llm.last_timings or {}
    return {"ttft_s": gen.timings().get("ttft", time.perf_counter() - started),
            "prompt_n": t.get("prompt_n"), "cache_n": t.get("cache_n"), "prompt_ms": t.get("prompt_ms")}


def ratio_interval(on: np.ndarray, off: np.ndarray, seed: int, draws: int = 10_000) -> tuple[float, float, float]:
    """Ratio of mean TTFT on/off over the questions, with a paired bootstrap 95 % interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(on), size=(draws, len(on)))
    ratios = on[idx].mean(axis=1) / off[idx].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(on.mean() / off.mean()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cmrc2018")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of passes (on, off)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--passage-tokens", type=int, default=160)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings(_env_file=None)
    # one more prompt than measured: the untimed request before each pass, so that no measured prompt
    # is found whole in the cache
    *rows, warm = prompts(args.dataset, args.questions + 1, args.k, args.seed, args.passage_tokens, settings)
    llms = {"on": EmbeddedLlamaLLM(cache_prompt=True), "off": EmbeddedLlamaLLM(cache_prompt=False)}
    llms["on"].warm_up()  # one loaded model, shared by both instances
    results: dict[str, list[list[dict[str, Any]]]] = {"on": [], "off": []}
    for round_no in range(args.rounds):
        for mode in ("on", "off"):
            llm = llms[mode]
            ask(llm, warm["messages"], args.max_tokens)  # untimed: leaves another prompt in the cache
            results[mode].append([ask(llm, r["messages"], args.max_tokens) for r in rows])
            log.info("round %d %s: TTFT p50 %.2f s", round_no + 1, mode,
                     statistics.median(x["ttft_s"] for x in results[mode][-1]))
    per_q = {m: np.array([statistics.median(p[i]["ttft_s"] for p in passes) for i in range(len(rows))])
             for m, passes in results.items()}
    ratio, low, high = ratio_interval(per_q["on"], per_q["off"], args.seed)

    def tokens(mode: str, key: str) -> float | None:
        values = [x[key] for p in results[mode] for x in p if isinstance(x.get(key), (int, float))]
        return statistics.median(values) if values else None

    summary = {
        "dataset": args.dataset, "questions": len(rows), "rounds": args.rounds, "k": args.k,
        "passage_tokens": args.passage_tokens, "max_tokens": args.max_tokens,
        "ttft_p50_s": {m: float(np.median(v)) for m, v in per_q.items()},
        "ttft_mean_s": {m: float(v.mean()) for m, v in per_q.items()},
        "ttft_p50_rounds_s": {m: [statistics.median(x["ttft_s"] for x in p) for p in ps] for m, ps in results.items()},
        "ratio_on_off_mean": ratio, "ratio_ci95": [low, high],
        "prompt_n_p50": {m: tokens(m, "prompt_n") for m in results},
        "cache_n_p50": {m: tokens(m, "cache_n") for m in results},
        "raw": results,
    }
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    sys.stdout.write(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
