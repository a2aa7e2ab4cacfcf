"""Scaled-up indexes for the benchmarks: `n` items made by copying a smaller set, the text of each
copy kept (so BM25 postings grow as in a larger corpus of the same language) and its vector
jittered (Gaussian noise, then unit length again) so every point is distinct in a vector index.
Used by `benchmarks/query.py --scale` and `benchmarks/peers/compare.py --phase scale`.
numpy only."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

JITTER = 0.02  # standard deviation of the noise added to every coordinate


class Copies(NamedTuple):
    source: np.ndarray  # (n,) index of the copied item in the base set
    copy: np.ndarray  # (n,) which copy it is: 0 for the first pass over the base set, then 1, 2, ...
    vectors: np.ndarray  # (n, dim) float32, unit length


def jittered_copies(vectors: np.ndarray, n: int, seed: int = 0, sigma: float = JITTER) -> Copies:
    """`n` copies of the rows of `vectors` (copy-major: the whole base set, then again, the last
    pass cut short), each row plus N(0, sigma) noise per coordinate, normalised to unit length.
    The noise is drawn in row order from `numpy.random.default_rng(seed)`: reproducible."""
    base = np.asarray(vectors, dtype=np.float32)
    if base.ndim != 2 or not len(base):
        raise ValueError(f"need a non-empty (rows, dim) array of vectors, got shape {base.shape}")
    if n < 0:
        raise ValueError(f"number of copies must be >= 0, got {n}")
    index = np.arange(n)
    source, copy = index % len(base), index // len(base)
    noise = np.random.default_rng(seed).normal(0, sigma, (n, base.shape[1])).astype(np.float32)
    jittered = base[source] + noise
    jittered /= np.linalg.norm(jittered, axis=1, keepdims=True)
    return Copies(source, copy, jittered)
