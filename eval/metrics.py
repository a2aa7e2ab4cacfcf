"""Evaluation metrics as pure functions, each scoring one query; the `*_metrics` functions
return the mean over queries (`aggregate`) and one row per query (`per_query`).

Retrieval metrics take the *relevance of a ranked list*: `ranked_relevance[i]` is the gain of
the item at rank i+1 (`True`/`1.0` relevant, `False`/`0.0` not, larger numbers for graded
relevance). Two levels are used:

- document level: the ranking is the list of distinct documents in first-appearance order
  (`dedupe_docs`), an item is relevant when qrels say so, `n_relevant` = number of relevant
  documents of the query;
- answer-chunk level: an item is a retrieved chunk, relevant when it comes from the gold
  document and contains a gold answer span (`chunk_contains_answer`). The answer needs to
  be found only once, so `n_relevant` = 1: recall@k is then 1 when any relevant chunk is in
  the top k, and only the first relevant chunk earns gain in nDCG.

In general at most `n_relevant` relevant items count (recall is capped at 1, nDCG at 1).
A query with `n_relevant` = 0 scores 0 on recall and nDCG.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from eval.datasets import GoldAnswer, squash
from rag.text import detect_language

Gain = bool | float

# -- retrieval -------------------------------------------------------------------------------


def dedupe_docs(doc_ids: Iterable[str]) -> list[str]:
    """Distinct ids in first-appearance order (several chunks of one document -> one entry)."""
    return list(dict.fromkeys(doc_ids))


def rank_by_score(scores: Mapping[str, float]) -> list[str]:
    """Ids by descending score; ties are broken by ascending id, so the order is deterministic."""
    return sorted(scores, key=lambda item: (-scores[item], item))


def hit_at_k(ranked_relevance: Sequence[Gain], k: int) -> float:
    """1.0 when any of the top k items is relevant, else 0.0."""
    return 1.0 if any(float(g) > 0 for g in ranked_relevance[:k]) else 0.0


def reciprocal_rank(ranked_relevance: Sequence[Gain], k: int = 10) -> float:
    """1 / rank of the first relevant item within the top k (0.0 when there is none): MRR@k."""
    for rank, gain in enumerate(ranked_relevance[:k], 1):
        if float(gain) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked_relevance: Sequence[Gain], n_relevant: int, k: int) -> float:
    """Share of the relevant items found in the top k, counting at most `n_relevant`."""
    if n_relevant <= 0:
        return 0.0
    found = sum(1 for g in ranked_relevance[:k] if float(g) > 0)
    return min(found, n_relevant) / n_relevant


def dcg(gains: Sequence[float]) -> float:
    """Sum of gain / log2(rank + 1), ranks from 1 (linear gains)."""
    return sum(float(g) / math.log2(rank + 1) for rank, g in enumerate(gains, 1))


def ndcg_at_k(
    ranked_relevance: Sequence[Gain],
    n_relevant: int,
    k: int = 10,
    ideal_gains: Sequence[float] | None = None,
) -> float:
    """nDCG@k. The ideal DCG puts the relevant items first: `ideal_gains` (the grades of all
    relevant items of the query) when given, else `n_relevant` items of gain 1. Only the first
    `n_relevant` relevant items of the ranking earn gain."""
    ideal = sorted((float(g) for g in ideal_gains), reverse=True) if ideal_gains is not None else [1.0] * n_relevant
    ideal_dcg = dcg(ideal[:k])
    if n_relevant <= 0 or ideal_dcg <= 0:
        return 0.0
    gains: list[float] = []
    counted = 0
    for gain in ranked_relevance[:k]:
        value = float(gain)
        if value > 0 and counted < n_relevant:
            counted += 1
            gains.append(value)
        else:
            gains.append(0.0)
    return dcg(gains) / ideal_dcg


def retrieval_metrics(
    ranked_relevance: Sequence[Sequence[Gain]],
    n_relevant: Sequence[int],
    ks: Sequence[int] = (1, 3, 5, 10),
    recall_ks: Sequence[int] = (5, 10),
    rank_k: int = 10,
    ideal_gains: Sequence[Sequence[float] | None] | None = None,
) -> dict:
    """hit@k for each k in `ks`, mrr@`rank_k`, ndcg@`rank_k` and recall@k for `recall_ks`,
    per query and averaged: `{"n", "aggregate": {metric: mean}, "per_query": [{metric: v}]}`."""
    if len(ranked_relevance) != len(n_relevant):
        raise ValueError(f"{len(ranked_relevance)} rankings but {len(n_relevant)} relevant counts")
    if ideal_gains is not None and len(ideal_gains) != len(n_relevant):
        raise ValueError(f"{len(ideal_gains)} ideal gain lists for {len(n_relevant)} queries")
    rows = []
    for i, (ranking, n_rel) in enumerate(zip(ranked_relevance, n_relevant)):
        row = {f"hit@{k}": hit_at_k(ranking, k) for k in ks}
        row[f"mrr@{rank_k}"] = reciprocal_rank(ranking, rank_k)
        ideal = ideal_gains[i] if ideal_gains is not None else None
        row[f"ndcg@{rank_k}"] = ndcg_at_k(ranking, n_rel, rank_k, ideal)
        row.update({f"recall@{k}": recall_at_k(ranking, n_rel, k) for k in recall_ks})
        rows.append(row)
    return {"n": len(rows), "aggregate": _mean_rows(rows), "per_query": rows}


class CitedSpan(NamedTuple):
    """A cited (or retrieved) chunk located in the evaluation corpus."""

    doc_id: str
    start: int | None
    end: int | None
    text: str


def chunk_contains_answer(
    chunk_doc: str,
    chunk_start: int | None,
    chunk_end: int | None,
    chunk_text: str,
    gold: Sequence[GoldAnswer],
) -> bool:
    """True when the chunk comes from a gold answer's document and contains the answer: by
    offsets when both the chunk's and the answer's are known (the chunk's [start, end) must
    hold the whole [a_start, a_start + len)), else by normalised text containment (NFKC,
    lowercase, whitespace collapsed)."""
    for answer in gold:
        if answer.doc_id != chunk_doc or not answer.text.strip():
            continue
        if answer.start is not None and chunk_start is not None and chunk_end is not None:
            if chunk_start <= answer.start and answer.start + len(answer.text) <= chunk_end:
                return True
        elif _squash(answer.text) in _squash(chunk_text):
            return True
    return False


def citation_correct(cited: Iterable[CitedSpan], gold: Sequence[GoldAnswer]) -> bool:
    """True when at least one cited span contains a gold answer (see `chunk_contains_answer`)."""
    return any(chunk_contains_answer(c.doc_id, c.start, c.end, c.text, gold) for c in cited)


_squash = squash


# -- answer quality --------------------------------------------------------------------------

_EN_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def answer_tokens(text: str, lang: str) -> list[str]:
    """SQuAD-style normalised tokens: NFKC, lowercase, punctuation (ASCII and CJK) deleted.
    English: articles dropped, whitespace-separated words. Chinese: one token per CJK
    character, runs of other characters (Latin words, numbers) as one token."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if not _is_punct(ch))
    if lang != "zh":
        return _EN_ARTICLES.sub(" ", text).split()
    tokens: list[str] = []
    for word in text.split():
        run = ""
        for ch in word:
            if _CJK_CHAR.match(ch):
                if run:
                    tokens.append(run)
                    run = ""
                tokens.append(ch)
            else:
                run += ch
        if run:
            tokens.append(run)
    return tokens


def _pairs(prediction: str, golds: Iterable[str]) -> Iterable[tuple[list[str], list[str]]]:
    for gold in golds:
        lang = detect_language(gold)
        yield answer_tokens(prediction, lang), answer_tokens(gold, lang)


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    return max((1.0 if p == g else 0.0 for p, g in _pairs(prediction, golds)), default=0.0)


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    """Token F1 (characters for Chinese gold answers, words for English), max over golds."""
    best = 0.0
    for pred, gold in _pairs(prediction, golds):
        common = sum((Counter(pred) & Counter(gold)).values())
        if not pred or not gold:
            score = 1.0 if pred == gold else 0.0
        elif common == 0:
            score = 0.0
        else:
            precision, recall = common / len(pred), common / len(gold)
            score = 2 * precision * recall / (precision + recall)
        best = max(best, score)
    return best


def answer_contains_gold(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when some normalised gold answer appears as a contiguous token run of the
    normalised prediction (a long answer that states the gold counts)."""
    for pred, gold in _pairs(prediction, golds):
        if gold and any(pred[i : i + len(gold)] == gold for i in range(len(pred) - len(gold) + 1)):
            return 1.0
    return 0.0


def answer_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict:
    """em, f1 and contains per query and averaged (same shape as `retrieval_metrics`)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold lists")
    rows = [
        {"em": exact_match(p, g), "f1": f1_score(p, g), "contains": answer_contains_gold(p, g)}
        for p, g in zip(predictions, golds)
    ]
    return {"n": len(rows), "aggregate": _mean_rows(rows), "per_query": rows}


def refusal_rate(refused: Iterable[bool]) -> float:
    """Share of answers that were refusals (0.0 for no answers)."""
    flags = list(refused)
    return sum(1 for f in flags if f) / len(flags) if flags else 0.0


# -- accuracy (containment of every required part) ------------------------------------------

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def containment_form(text: str) -> str:
    """The text as compared by `answer_accuracy`: NFKC (full-width letters, digits and
    punctuation become half-width), lowercase, thousands separators dropped from numbers
    (1,313,851 -> 1313851), punctuation turned into spaces, whitespace collapsed, and no space
    left next to a CJK character (Chinese is written without spaces)."""
    text = _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).lower())
    words = "".join(" " if _is_punct(ch) else ch for ch in text).split()
    out = ""
    for word in words:
        if out and not (_CJK_CHAR.match(out[-1]) or _CJK_CHAR.match(word[0])):
            out += " "
        out += word
    return out


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() and not _CJK_CHAR.match(ch)


def text_contains(prediction_form: str, gold: str) -> bool:
    """True when `gold` (raw text) occurs in `prediction_form` (a `containment_form`) on word
    boundaries: a gold answer that starts or ends with a letter or digit does not match inside a
    longer word or number ("10" is not in "100"); CJK characters need no boundary."""
    needle = containment_form(gold)
    if not needle:
        return False
    i = prediction_form.find(needle)
    while i >= 0:
        before = prediction_form[i - 1] if i > 0 else ""
        after = prediction_form[i + len(needle)] if i + len(needle) < len(prediction_form) else ""
        if not (before and _is_word_char(before) and _is_word_char(needle[0])) and not (
                after and _is_word_char(after) and _is_word_char(needle[-1])):
            return True
        i = prediction_form.find(needle, i + 1)
    return False


def answer_accuracy(prediction: str, answers: Sequence[str], all_of: Sequence[Sequence[str]] = ()) -> float:
    """1.0 when the prediction states the gold answer: with `all_of` (parts, each a list of
    alternative forms) every part must appear in one of its forms; otherwise any one of the
    alternative `answers` must appear. Matching is containment after `containment_form`, in
    English and Chinese alike."""
    form = containment_form(prediction)
    if all_of:
        return 1.0 if all(any(text_contains(form, alt) for alt in part) for part in all_of) else 0.0
    return 1.0 if any(text_contains(form, a) for a in answers) else 0.0


# -- paired comparison -----------------------------------------------------------------------

TIE_TOLERANCE = 1e-9


def paired_bootstrap(
    baseline: Sequence[float],
    other: Sequence[float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | int]:
    """Paired bootstrap of the mean per-query difference `other - baseline` (the same queries,
    in the same order): the queries are resampled with replacement `resamples` times with a
    seeded generator, and the interval is the percentile interval of the resampled means.
    Returns `{"n", "mean", "low", "high", "wins", "ties", "losses"}`; wins/ties/losses count the
    queries where `other` scores higher / the same (within 1e-9) / lower."""
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(other, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two lists of equal length, got {a.shape} and {b.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    diff = b - a
    n = len(diff)
    wins = int(np.sum(diff > TIE_TOLERANCE))
    losses = int(np.sum(diff < -TIE_TOLERANCE))
    if n == 0:
        return {"n": 0, "mean": 0.0, "low": 0.0, "high": 0.0, "wins": 0, "ties": 0, "losses": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    batch = max(1, 2_000_000 // n)  # bounded memory: at most ~2M indices at a time
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        means[start : start + size] = diff[rng.integers(0, n, size=(size, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"n": n, "mean": float(diff.mean()), "low": float(low), "high": float(high),
            "wins": wins, "ties": n - wins - losses, "losses": losses}


# -- latency ---------------------------------------------------------------------------------


def latency_summary(timings: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage: p50, p95 (numpy linear interpolation) and mean seconds over the queries
    that report the stage."""
    samples: dict[str, list[float]] = {}
    for row in timings:
        for stage, seconds in row.items():
            samples.setdefault(stage, []).append(float(seconds))
    summary = {}
    for stage, values in samples.items():
        arr = np.asarray(values, dtype=float)
        summary[stage] = {
            "p50": float(np.percentile(arr, 50, method="linear")),
            "p95": float(np.percentile(arr, 95, method="linear")),
            "mean": float(arr.mean()),
        }
    return summary


def _mean_rows(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}
