"""What every benchmarked system shares, standard library only (it is imported both by
`run_peer.py` in the peers' virtualenv and by `run_ours.py` in the project's).

A system is one process: it reads the shared chunk texts and queries, builds its index (timed:
"ingest" = embedding every chunk + building the vector and lexical indexes, with the model
already loaded), answers each query once (timed one by one, after a few untimed warm-up
queries) and prints one JSON object: timings, peak RSS and the ranked chunk ids per query.
Quality is scored by the driver (`compare.py`), the same way for every system."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("peers")

WARMUP_QUERIES = 5


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def common_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--chunks", required=True, help="chunks.jsonl written by compare.py")
    parser.add_argument("--queries", required=True, help="queries.jsonl written by compare.py")
    parser.add_argument("--workdir", required=True, help="an empty folder for this run's index files")
    parser.add_argument("--top-k", type=int, default=10, help="per retriever, and after fusion")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")


class Stopwatch:
    """Accumulates the time spent inside `with stopwatch:` blocks (e.g. in the embedding model),
    so a system's total can be split into model time and everything else."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.total += time.perf_counter() - self._start


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run_queries(retrieve: Callable[[str], list[str]], queries: Sequence[dict[str, Any]], embed: Stopwatch,
                warmup: int = WARMUP_QUERIES) -> dict[str, Any]:
    """Answer every query once, timing each call; `retrieve(question)` returns ranked chunk ids
    and `embed` times the query-embedding calls inside it. The first `warmup` questions are
    asked once beforehand, untimed (lazy imports, caches)."""
    for row in queries[:warmup]:
        retrieve(row["question"])
    gc.collect()
    rankings: dict[str, list[str]] = {}
    latencies: list[float] = []
    embed_times: list[float] = []
    for row in queries:
        before = embed.total
        start = time.perf_counter()
        ids = retrieve(row["question"])
        latencies.append(time.perf_counter() - start)
        embed_times.append(embed.total - before)
        rankings[row["qid"]] = list(ids)
    return {"rankings": rankings, "latency_s": latencies, "query_embed_s": embed_times}


def emit(result: dict[str, Any], out: str | None) -> None:
    result["peak_rss_mb"] = peak_rss_mb()
    text = json.dumps(result)
    if out:
        Path(out).write_text(text, encoding="utf-8")
    sys.stdout.write(text + "\n")
