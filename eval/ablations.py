"""Ablation configurations for `rag eval --compare`, and the retrieval scoring of one
configuration over a query sample.

A configuration name is a retrieval mode (`bm25`, `dense`, `hybrid`) optionally followed by
`+rerank`, `+<transform>` (`+multi_query`, `+hyde`, ...) and/or a fusion (`+rrf`: plain weighted
RRF; `+confidence`, the default: confidence-weighted RRF), e.g. `hybrid+rerank+multi_query`,
`hybrid+rrf`. Every configuration states all its choices explicitly, so the settings' defaults
never leak into an ablation row.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.datasets import Dataset, GoldAnswer, doc_id_from_source
from eval.metrics import CitedSpan, chunk_contains_answer, dedupe_docs, latency_summary, retrieval_metrics
from rag.errors import ConfigError
from rag.names import BM25, DENSE, FUSIONS, HYBRID
from rag.settings import TRANSFORMS
from rag.types import Chunk, Hit

MODES = (BM25, DENSE, HYBRID)  # the order of the ablation table
RERANK = "rerank"
DEFAULT_COMPARE = "bm25,dense,hybrid"
EVAL_DEPTH = 10  # ranked chunks scored per query (hit@10, MRR@10, nDCG@10, recall@10)


@dataclass(frozen=True)
class EvalConfig:
    name: str
    mode: str
    rerank: bool = False
    transforms: tuple[str, ...] = ()
    fusion: str = FUSIONS[0]


def valid_config_help() -> str:
    extras = ", ".join(f"+{x}" for x in (RERANK, *TRANSFORMS, *FUSIONS))
    return f"{', '.join(MODES)}, each optionally followed by any of {extras} (e.g. hybrid+rerank+multi_query)"


def parse_config(name: str) -> EvalConfig:
    """`hybrid+rerank+hyde` -> EvalConfig(mode="hybrid", rerank=True, transforms=("hyde",));
    `hybrid+rrf` -> EvalConfig(mode="hybrid", fusion="rrf")."""
    parts = [p.strip().lower() for p in name.strip().split("+")]
    if not parts or parts[0] not in MODES or any(not p for p in parts):
        raise ConfigError(f"unknown evaluation config {name!r}; valid: {valid_config_help()}", field="compare")
    rerank = False
    transforms: list[str] = []
    fusion: str | None = None
    for part in parts[1:]:
        if part == RERANK and not rerank:
            rerank = True
        elif part in FUSIONS and fusion is None:
            fusion = part
        elif part in TRANSFORMS and part not in transforms:
            transforms.append(part)
        else:
            raise ConfigError(f"unknown or repeated part {part!r} in evaluation config {name!r}; "
                              f"valid: {valid_config_help()}", field="compare")
    return EvalConfig("+".join(parts), parts[0], rerank, tuple(transforms), fusion or FUSIONS[0])


def parse_compare(spec: str | Sequence[str] | None) -> list[EvalConfig]:
    """A comma-separated list (or a list) of configuration names; duplicates are dropped."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    configs = [parse_config(n) for n in names if n.strip()]
    if not configs:
        raise ConfigError(f"no evaluation config given; valid: {valid_config_help()}", field="compare")
    return list({c.name: c for c in configs}.values())


# -- scoring ---------------------------------------------------------------------------------


@dataclass
class ConfigResult:
    config: EvalConfig
    doc: dict[str, Any]  # retrieval_metrics over the sample at document level
    answer: dict[str, Any] | None  # at answer-chunk level (None: the dataset has no answers)
    latency: dict[str, dict[str, float]]
    rerank_enabled: bool  # reranking really ran (False when requested but no reranker exists)
    per_query: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)  # retrieved chunks by how they were located


class ChunkLocator:
    """Maps a retrieved chunk (or a cited source) to its dataset document and to its span in
    the corpus text, so gold answers are matched by offsets. The ingest parser may normalise
    whitespace, which shifts offsets: a span whose [start, end) is not exactly its text is
    located again in the corpus (same words, any whitespace between them, nearest to the
    given offset); only when that fails does matching fall back to normalised text."""

    REALIGN_WINDOW = 2000  # characters before the given offset where the search starts

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._cache: dict[tuple[str, int, int, str], tuple[CitedSpan, str]] = {}

    def doc_id(self, source: str) -> str:
        return doc_id_from_source(source)

    def locate(self, source: str, start: int, end: int, text: str) -> tuple[CitedSpan, str]:
        """(span in corpus coordinates, how): how is "exact", "realigned", "text" (offsets
        unknown: None) or "unjudged" (a passage whose text was not kept because no query
        judges it relevant: its offsets are taken as given)."""
        key = (source, start, end, text)
        if key not in self._cache:
            doc_id = self.doc_id(source)
            doc = self.dataset.corpus.get(doc_id)
            if doc is None and doc_id in self.dataset.doc_ids:
                # a passage no query judges relevant, whose text is not kept: it holds no gold span
                found = CitedSpan(doc_id, start, end, text), "unjudged"
            elif doc is not None and doc.text[start:end] == text:
                found = CitedSpan(doc_id, start, end, text), "exact"
            else:
                where = _realign(doc.text, text, start, self.REALIGN_WINDOW) if doc is not None else None
                found = ((CitedSpan(doc_id, where[0], where[1], text), "realigned") if where
                         else (CitedSpan(doc_id, None, None, text), "text"))
            self._cache[key] = found
        return self._cache[key]

    def span(self, source: str, start: int, end: int, text: str) -> CitedSpan:
        return self.locate(source, start, end, text)[0]

    def contains(self, chunk: Chunk, gold: Sequence[GoldAnswer]) -> bool:
        span = self.span(chunk.source, chunk.start, chunk.end, chunk.text)
        return chunk_contains_answer(span.doc_id, span.start, span.end, span.text, gold)


def _realign(doc_text: str, text: str, hint: int, window: int) -> tuple[int, int] | None:
    words = text.split()
    if not words:
        return None
    pattern = re.compile(r"\s*".join(re.escape(w) for w in words))
    match = pattern.search(doc_text, max(0, hint - window)) or pattern.search(doc_text)
    return (match.start(), match.end()) if match else None


Retrieve = Callable[[str, EvalConfig], Any]  # (question, config) -> RetrievalResult


def score_config(
    config: EvalConfig,
    dataset: Dataset,
    qids: Sequence[str],
    retrieve: Retrieve,
    locator: ChunkLocator,
    progress: Callable[[int], None] | None = None,
) -> ConfigResult:
    """Run every sampled query through `retrieve` and score the top EVAL_DEPTH chunks at
    document level (graded: nDCG uses the qrels grades as gains) and, for queries with located
    gold answer spans, at answer-chunk level."""
    doc_rankings, doc_counts, doc_ideals, ans_rankings, rows, timings = [], [], [], [], [], []
    rerank_seen = False
    for qid in qids:
        question = dataset.queries[qid]
        started = time.perf_counter()
        result = retrieve(question, config)
        elapsed = time.perf_counter() - started
        rerank_seen = rerank_seen or bool(getattr(result, "rerank_enabled", False))
        hits: list[Hit] = list(result.hits)[:EVAL_DEPTH]
        relevant = dataset.qrels.get(qid, {})
        docs = dedupe_docs(locator.doc_id(h.chunk.source) for h in hits)
        doc_rankings.append([float(relevant.get(d, 0)) for d in docs])  # graded gains for nDCG
        doc_counts.append(len(relevant))
        doc_ideals.append([float(g) for g in relevant.values()])
        gold = dataset.answers.get(qid)
        answer_flags = [locator.contains(h.chunk, gold) for h in hits] if gold else None
        if answer_flags is not None:
            ans_rankings.append(answer_flags)
        timings.append({**dict(getattr(result, "timings", {}) or {}), "total": elapsed})
        rows.append(_query_row(config, qid, question, relevant, hits, locator, answer_flags, timings[-1]))
        if progress is not None:
            progress(1)
    doc = retrieval_metrics(doc_rankings, doc_counts, ideal_gains=doc_ideals)
    answer = retrieval_metrics(ans_rankings, [1] * len(ans_rankings)) if dataset.answers else None
    doc_iter = iter(doc["per_query"])
    ans_iter = iter(answer["per_query"]) if answer else iter(())
    for row in rows:
        row["doc_metrics"] = next(doc_iter)
        row["answer_metrics"] = next(ans_iter) if row["answer_chunk_ranks"] is not None else None
    located = Counter(h["located"] for row in rows for h in row["retrieved"])
    return ConfigResult(config, doc, answer, latency_summary(timings), rerank_seen, rows, dict(located))


def _query_row(config: EvalConfig, qid: str, question: str, relevant: dict[str, int], hits: list[Hit],
               locator: ChunkLocator, answer_flags: list[bool] | None, timing: dict[str, float]) -> dict[str, Any]:
    retrieved = []
    for rank, hit in enumerate(hits, 1):
        chunk = hit.chunk
        span, how = locator.locate(chunk.source, chunk.start, chunk.end, chunk.text)
        retrieved.append({"rank": rank, "chunk_id": chunk.id, "doc_id": span.doc_id, "start": span.start,
                          "end": span.end, "located": how, "score": hit.score, "rerank_score": hit.rerank_score,
                          "relevant_doc": relevant.get(span.doc_id, 0) > 0,
                          "grade": relevant.get(span.doc_id, 0),
                          "answer_chunk": answer_flags[rank - 1] if answer_flags is not None else None})
    return {"config": config.name, "qid": qid, "question": question, "relevant_docs": sorted(relevant),
            "retrieved": retrieved,
            "answer_chunk_ranks": ([i for i, f in enumerate(answer_flags, 1) if f]
                                   if answer_flags is not None else None),
            "timings": timing}
