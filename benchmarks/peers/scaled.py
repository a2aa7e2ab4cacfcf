"""The scale phase's inputs and checks (`compare.py --phase scale`): the shared chunks copied up to
`n` with jittered vectors (`benchmarks.scale.jittered_copies`, as `benchmarks/query.py --scale`
does), the copies mapped back to their original chunk for scoring, and an exact dense search
over the copies' vectors, the reference every row's dense lists are checked against.

- Copy 0 of a chunk keeps its id and document; copy c >= 1 gets the id
  `uuid5(URL, "<id>/copy<c>")` and the document `<doc_id>-c<c>`. Text and offsets are kept, so
  BM25 sees every text ~n/len(chunks) times (identical BM25 scores within a chunk's copies).
- Scoring (`to_origin`): each ranked copy counts as its original chunk, once: the first copy of
  a chunk in a list stands at its rank, later copies of the same chunk in that list count as not
  relevant (a user reading the list sees the same passage again, nothing new). Ranks are not
  closed up, so hit@5 and MRR@10 are those of the list as returned.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale import JITTER, jittered_copies


def copy_rows(rows: Sequence[dict[str, Any]], source: np.ndarray, copy: np.ndarray) -> list[dict[str, Any]]:
    """The chunk rows of the copies: row i is copy `copy[i]` of `rows[source[i]]`."""
    out = []
    for s, c in zip(source.tolist(), copy.tolist()):
        row = rows[s]
        if c == 0:
            out.append(dict(row))
        else:
            out.append({**row, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{row['id']}/copy{c}")),
                        "doc_id": f"{row['doc_id']}-c{c}"})
    return out


def write_scaled_inputs(base: Path, out: Path, n: int, seed: int, sigma: float = JITTER) -> dict[str, str]:
    """`out/chunks.jsonl` and `out/vectors.npy`: `n` copies of `base`'s chunks and vectors,
    jittered; `queries.jsonl` and `query_vectors.npy` copied as they are. Returns copy id ->
    original chunk id."""
    rows = [json.loads(line) for line in open(base / "chunks.jsonl", encoding="utf-8")]
    copies = jittered_copies(np.load(base / "vectors.npy"), n, seed, sigma)
    scaled = copy_rows(rows, copies.source, copies.copy)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "chunks.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in scaled)
    np.save(out / "vectors.npy", copies.vectors)
    for name in ("queries.jsonl", "query_vectors.npy"):
        shutil.copyfile(base / name, out / name)
    return {r["id"]: rows[s]["id"] for r, s in zip(scaled, copies.source.tolist())}


def to_origin(rankings: Mapping[str, Sequence[str]], origin: Mapping[str, str]) -> dict[str, list[str | None]]:
    """Each ranked copy as its original chunk id, a chunk seen again in the same list as None
    (not relevant), ranks kept."""
    out: dict[str, list[str | None]] = {}
    for qid, ids in rankings.items():
        seen: set[str] = set()
        mapped: list[str | None] = []
        for cid in ids:
            first = origin[cid]
            mapped.append(None if first in seen else first)
            seen.add(first)
        out[qid] = mapped
    return out


def exact_dense(passages: np.ndarray, questions: np.ndarray, ids: Sequence[str], qids: Sequence[str],
                top_k: int) -> dict[str, list[str]]:
    """Exact top-k by dot product (float64) of every question against every passage: what a brute
    force over the same unit vectors returns, the reference of the dense-list check."""
    scores = np.asarray(questions, dtype=np.float64) @ np.asarray(passages, dtype=np.float64).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return {qid: [ids[j] for j in row] for qid, row in zip(qids, top.tolist())}


def recall_at_k(reference: Mapping[str, Sequence[str]], other: Mapping[str, Sequence[str]], qids: Sequence[str],
                k: int) -> float:
    """Mean share of the reference's top k found in the other's top k (HNSW recall@k when the
    reference is exact)."""
    if not qids:
        return 1.0
    return sum(len(set(list(reference[q])[:k]) & set(list(other.get(q, []))[:k])) / k for q in qids) / len(qids)
