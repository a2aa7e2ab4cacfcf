"""`rag eval DATASET --robustness`: the four abilities of the RGB benchmark (Chen et al., AAAI
2024) measured on a dataset's own questions, with the retrieval step replaced by controlled
contexts (`eval.contexts`) and everything after it real: packing, the answer prompt, the
configured LLM, citation cleaning, verification and attribution, and the refusal logic
(`Pipeline.answer_from_hits`).

- **noise**: per noise ratio r (default 0, 0.2, 0.4, 0.6, 0.8) and k passages (default 5):
  round(r·k) noise windows plus min(positives available, k − round(r·k)) positives, shuffled;
  a question with fewer positives than that gets a shorter context (the noise count is kept, so
  the actual noise share is reported beside the nominal ratio);
- **rejection**: k noise windows only: the answer should be the refusal;
- **integration**: questions with ≥ 2 `all_of` parts whose parts are stated in different
  windows: one window per part, none holding every part;
- **counterfactual**: a positive window and the question's counterfactual passage.

Scores per answer: `accuracy` (`answer_accuracy`: every `all_of` part, else any answer),
`f1`, refusal and its reason, the kinds of the cited passages; counterfactual answers also
`misled` (states a false answer but no gold one) and `noticed_conflict` (see
`noticed_conflict`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.contexts import ContextBuilder, Passage, contains_any, read_counterfactuals, shuffled
from eval.datasets import Dataset
from eval.metrics import answer_accuracy, containment_form, f1_score, text_contains
from rag.citations import strip_markers
from rag.generation import context_budget
from rag.transforms import question_language
from rag.types import Answer

log = logging.getLogger(__name__)

RATIOS = (0.0, 0.2, 0.4, 0.6, 0.8)
TESTS = ("noise", "rejection", "integration", "counterfactual")
QUESTION_ALLOWANCE = 160  # prompt tokens kept free for the question when sizing the windows
CONFLICT_PHRASES = {
    "en": ("conflict", "contradict", "disagree", "inconsistent", "differing", "different answers",
           "sources differ", "not consistent", "discrepan"),
    "zh": ("矛盾", "冲突", "不一致", "说法不同", "不同的说法", "说法不一", "存在分歧", "有分歧", "相互矛盾"),
}


def noticed_conflict(prediction: str, golds: Sequence[str], false_answers: Sequence[str]) -> bool:
    """True when the answer states a gold answer and a counterfactual answer side by side, or
    says the sources disagree (a phrase of `CONFLICT_PHRASES`, English or Chinese)."""
    lowered = prediction.lower()
    if any(p in lowered for phrases in CONFLICT_PHRASES.values() for p in phrases):
        return True
    form = containment_form(prediction)
    return any(text_contains(form, g) for g in golds) and any(text_contains(form, a) for a in false_answers)


def passage_tokens(settings, k: int, wanted: int) -> int:
    """Tokens per window: `wanted`, capped so that k windows with their headings fit the
    prompt's source budget (in English and Chinese) without trimming."""
    budget = min(context_budget(settings.llm_context_window, settings.llm_max_tokens, "", lang)
                 for lang in ("en", "zh")) - QUESTION_ALLOWANCE
    return max(8, min(wanted, budget // k))


@dataclass
class Trial:
    """One controlled context to answer: its test, setting (the noise ratio) and passages."""

    test: str
    passages: list[Passage]
    ratio: float | None = None
    wanted_noise: int = 0


def trials(builder: ContextBuilder, qid: str, *, k: int, ratios: Sequence[float], seed: int,
           skipped: dict[str, dict[str, str]]) -> list[Trial]:
    """Every context of a question, each shuffled reproducibly; a test the question does not
    qualify for is recorded in `skipped[test][qid]` with the reason."""
    positives = builder.positives(qid)
    pool = builder.noise(qid, k)
    out: list[Trial] = []
    if not positives:
        skipped.setdefault("noise", {})[qid] = "no positive passage"
    for ratio in ratios if positives else ():
        n_noise = round(ratio * k)
        chosen = positives[: k - n_noise] + pool[:n_noise]
        out.append(Trial("noise", shuffled(chosen, seed, qid, "noise", ratio), ratio, n_noise))
    if pool:
        out.append(Trial("rejection", shuffled(pool, seed, qid, "rejection"), wanted_noise=k))
    else:
        skipped.setdefault("rejection", {})[qid] = "no noise passage"
    partial, why = builder.partials(qid)
    if partial:
        out.append(Trial("integration", shuffled(partial[:k], seed, qid, "integration")))
    else:
        skipped.setdefault("integration", {})[qid] = why
    cf = builder.counterfactual(qid)
    if cf is not None and positives:
        out.append(Trial("counterfactual", shuffled([positives[0], cf], seed, qid, "counterfactual")))
    else:
        skipped.setdefault("counterfactual", {})[qid] = ("no counterfactual passage" if cf is None
                                                         else "no positive passage")
    return out


def score(dataset: Dataset, qid: str, trial: Trial, answer: Answer, seconds: float,
          false_answers: Sequence[str] = ()) -> dict[str, Any]:
    """One per-query row: the context, the answer and its scores."""
    key = dataset.answer_keys[qid]
    golds = list(key.answers)
    prediction = "" if answer.refused else strip_markers(answer.answer)
    by_number = {s.number: s for s in answer.sources}
    kinds = {p.hit().chunk.id: p.kind for p in trial.passages}
    cited = []
    for c in answer.citations:
        source = by_number.get(c.source_number)
        cited.append({"number": c.source_number, "kind": kinds.get(source.chunk_id) if source else None,
                      "origin": c.origin, "supported": c.supported, "support": c.support})
    n_noise = sum(p.kind == "noise" for p in trial.passages)
    row: dict[str, Any] = {
        "test": trial.test, "ratio": trial.ratio, "qid": qid, "question": dataset.queries[qid], "gold": golds,
        "all_of": [list(p) for p in key.all_of],
        "passages": [p.record() for p in trial.passages],
        "n_positive": sum(p.kind in ("positive", "partial") for p in trial.passages), "n_noise": n_noise,
        "noise_share": n_noise / len(trial.passages) if trial.passages else 0.0,
        "noise_missing": max(0, trial.wanted_noise - n_noise),
        "answer": answer.answer, "refused": answer.refused, "refusal_reason": answer.info.get("refusal_reason"),
        "unsupported_answer": answer.info.get("unsupported_answer"),
        "answer_check": answer.info.get("answer_check"),
        "accuracy": answer_accuracy(prediction, golds, key.all_of),
        "f1": f1_score(prediction, golds) if golds else None,
        "cited": cited, "context": answer.info.get("context"),
        "timings": {**{k: v for k, v in answer.timings.items() if k in ("generate", "verify")},
                    "total": seconds},
    }
    if trial.test == "integration":
        form = containment_form(prediction)
        row["parts_found"] = sum(any(text_contains(form, a) for a in part) for part in key.all_of) / len(key.all_of)
    if trial.test == "counterfactual":
        states_gold = bool(row["accuracy"])
        states_false = contains_any(prediction, false_answers)
        row["false_answers"] = list(false_answers)
        row["misled"] = float(states_false and not states_gold)
        row["noticed_conflict"] = float(noticed_conflict(prediction, golds + [a for p in key.all_of for a in p],
                                                         false_answers))
    return row


@dataclass
class RobustnessRun:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # test -> qid -> why not run
    windows: int = 0
    window_tokens: int = 0


def run_trials(pipeline, dataset: Dataset, qids: Sequence[str], *, k: int, ratios: Sequence[float], seed: int,
               window_tokens: int, progress: Callable[[int], None] | None = None,
               total: Callable[[int], None] | None = None, tests: Sequence[str] = TESTS) -> RobustnessRun:
    """Build every context of the chosen `tests` for every sampled question, answer it with
    `pipeline.answer_from_hits` and score it. `total(n)` is told the number of answers first."""
    counterfactuals = read_counterfactuals(dataset)
    builder = ContextBuilder(dataset, window_tokens, counterfactuals)
    run = RobustnessRun(windows=len(builder), window_tokens=window_tokens)
    try:
        planned = [(qid, t) for qid in qids if qid in dataset.answer_keys
                   for t in trials(builder, qid, k=k, ratios=ratios, seed=seed, skipped=run.skipped)
                   if t.test in tests]
    finally:
        builder.close()
    if total is not None:
        total(len(planned))
    for qid, trial in planned:
        question = dataset.queries[qid]
        started = time.perf_counter()
        answer = pipeline.answer_from_hits(question, [p.hit() for p in trial.passages],
                                           lang=question_language(question))
        seconds = time.perf_counter() - started
        cf = counterfactuals.get(qid)
        run.rows.append(score(dataset, qid, trial, answer, seconds, cf.answers if cf else ()))
        if progress is not None:
            progress(1)
    log.info("robustness: %d answers for %d questions", len(run.rows), len(qids))
    return run

