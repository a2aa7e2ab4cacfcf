"""Answer quality for `rag eval --answers`: generate an answer per sampled query with the real
pipeline and score it against the gold answers (accuracy, exact match, F1, contains-gold), check its
citations (does a cited source hold a gold answer span), count refusals, and optionally ask
the configured LLM to judge faithfulness and answer relevance with the prompts in
`eval/prompts/`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.ablations import ChunkLocator, EvalConfig
from eval.datasets import Dataset
from eval.metrics import (
    CitedSpan,
    answer_accuracy,
    answer_contains_gold,
    citation_correct,
    exact_match,
    f1_score,
    latency_summary,
)
from eval.prompts import format_sources, parse_judge_output, render_prompt
from rag.citations import strip_markers
from rag.types import Answer, Hit

log = logging.getLogger(__name__)

JUDGE_MAX_TOKENS = 200


@dataclass
class AnswerResult:
    config: str
    n: int
    aggregate: dict[str, float | None]
    latency: dict[str, dict[str, float]]
    per_query: list[dict[str, Any]] = field(default_factory=list)
    judge_failures: int = 0  # judge replies without a parsable score

    def table_row(self) -> dict[str, Any]:
        total = self.latency.get("total", {})
        return {"name": self.config, "n": self.n, **self.aggregate,
                "p50 s": total.get("p50", 0.0), "p95 s": total.get("p95", 0.0)}


def cited_spans(answer: Answer, locator: ChunkLocator) -> list[CitedSpan]:
    """The sources the answer's citations point at, located in the evaluation corpus."""
    by_number = {s.number: s for s in answer.sources}
    numbers = dict.fromkeys(c.source_number for c in answer.citations)
    return [locator.span(by_number[n].source, by_number[n].start, by_number[n].end, by_number[n].text)
            for n in numbers if n in by_number]


def ranking_row(hit: Hit, locator: ChunkLocator) -> dict[str, Any]:
    """One retrieved hit of an answer row: its chunk and document, fused and rerank scores, and
    its rank in each list that found it ("dense:original": 1, ...)."""
    return {"chunk_id": hit.chunk.id, "doc_id": locator.doc_id(hit.chunk.source), "score": hit.score,
            "rerank_score": hit.rerank_score, "ranks": {f"{p.list_name}:{p.variant}": p.rank for p in hit.provenance}}


def judge(llm, prompt_name: str, **values: str) -> float | None:
    """One LLM-judge score in 0..1, or None when the reply holds no parsable score."""
    reply = llm.chat([{"role": "user", "content": render_prompt(prompt_name, **values)}],
                     max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)
    try:
        return parse_judge_output(reply)[0]
    except ValueError:
        log.warning("judge %s: unparsable reply %r", prompt_name, reply[:120])
        return None


def evaluate_answers(
    pipeline,
    kb: str,
    dataset: Dataset,
    qids: Sequence[str],
    config: EvalConfig | None,
    locator: ChunkLocator,
    *,
    judge_llm=None,
    progress: Callable[[int], None] | None = None,
    strategy: str | None = None,
) -> AnswerResult:
    """Answer every sampled query that has gold answers with `pipeline.answer` (with the
    configuration's mode, rerank and transforms, or the pipeline's defaults when `config` is
    None) and score it: `accuracy` (every `all_of` part, else any alternative answer, stated
    in the answer; see `answer_accuracy`), and EM/F1/contains against the alternative answers
    (None for a query that has only `all_of` parts). Refused answers score 0; citation
    correctness (over queries whose answers were located in a passage) and the judge scores
    are averaged over the answered (not refused) queries only."""
    kwargs = {} if config is None else {"mode": config.mode, "rerank": config.rerank,
                                        "transforms": config.transforms, "fusion": config.fusion}
    if strategy is not None:
        kwargs["strategy"] = strategy
    rows, timings, failures = [], [], 0
    for qid in qids:
        key = dataset.answer_keys.get(qid)
        if key is None:
            if progress is not None:
                progress(1)
            continue
        golds = dataset.answers.get(qid, [])
        question = dataset.queries[qid]
        started = time.perf_counter()
        answer = pipeline.answer(question, kb, **kwargs)
        timing = {**dict(answer.timings or {}), "total": time.perf_counter() - started}
        gold_texts = list(key.answers)
        prediction = "" if answer.refused else strip_markers(answer.answer)
        has_texts = bool(gold_texts)
        row: dict[str, Any] = {
            "qid": qid, "question": question, "gold": gold_texts, "all_of": [list(p) for p in key.all_of],
            "answer": answer.answer, "refused": answer.refused,
            "refusal_reason": answer.info.get("refusal_reason"),
            "answer_check": answer.info.get("answer_check"),
            # the generated text an after-generation check replaced by the refusal
            "refused_answer": answer.info.get("unsupported_answer"),
            "context_tokens": (answer.info.get("context") or {}).get("used_tokens"),
            "accuracy": answer_accuracy(prediction, gold_texts, key.all_of),
            "em": exact_match(prediction, gold_texts) if has_texts else None,
            "f1": f1_score(prediction, gold_texts) if has_texts else None,
            "contains": answer_contains_gold(prediction, gold_texts) if has_texts else None,
            "citation_correct": None if answer.refused or not golds
            else float(citation_correct(cited_spans(answer, locator), golds)),
            "cited": sorted({c.source_number for c in answer.citations}),
            "sources": [{"number": s.number, "doc_id": locator.doc_id(s.source), "start": s.start, "end": s.end}
                        for s in answer.sources],
            # the retrieved hits in rank order with their scores and list ranks: what a rule on the
            # ranking (how many sources to read) can be replayed on
            "ranking": [ranking_row(h, locator) for h in answer.hits],
        }
        if judge_llm is not None and not answer.refused:
            started = time.perf_counter()
            sources = format_sources([s.text for s in answer.sources])
            row["faithfulness"] = judge(judge_llm, "faithfulness", question=question, answer=answer.answer,
                                        sources=sources)
            row["answer_relevance"] = judge(judge_llm, "answer_relevance", question=question, answer=answer.answer)
            failures += (row["faithfulness"] is None) + (row["answer_relevance"] is None)
            timing["judge"] = time.perf_counter() - started
        row["timings"] = timing
        rows.append(row)
        timings.append(timing)
        if progress is not None:
            progress(1)
    name = config.name if config is not None else "pipeline defaults"
    if strategy is not None:
        name = f"{name} ({strategy})"
    return AnswerResult(name, len(rows), _aggregate(rows, judged=judge_llm is not None), latency_summary(timings),
                        rows, failures)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _aggregate(rows: Sequence[dict[str, Any]], judged: bool) -> dict[str, float | None]:
    out = {key: _mean([r[key] for r in rows]) for key in ("accuracy", "em", "f1", "contains", "citation_correct")}
    out["refusal_rate"] = _mean([1.0 if r["refused"] else 0.0 for r in rows])
    if judged:
        for key in ("faithfulness", "answer_relevance"):
            out[key] = _mean([r.get(key) for r in rows])
    return out
