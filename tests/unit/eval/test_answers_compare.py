"""benchmarks/answers_compare.py: two --answers runs on the same questions, paired."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("answers_compare", ROOT / "benchmarks" / "answers_compare.py")
answers_compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(answers_compare)


def row(qid: str, accuracy: float, refused: bool = False, ttft: float = 2.0, cited: float | None = 1.0) -> dict:
    return {"qid": qid, "accuracy": accuracy, "contains": accuracy, "refused": refused,
            "citation_correct": None if refused else cited, "context_tokens": 100,
            "timings": {"ttft": ttft, "total": ttft + 1}}


def test_compare_pairs_the_common_questions_and_reports_the_ttft_ratio():
    first = {q: row(q, 0.0, ttft=4.0) for q in ("a", "b", "c", "only-first")}
    second = {"a": row("a", 1.0, ttft=2.0), "b": row("b", 1.0, ttft=2.0), "c": row("c", 0.0, refused=True, ttft=2.0)}
    text = answers_compare.compare(first, second, ("old", "new"))
    assert text.startswith("3 questions in common")
    assert "| accuracy | 3 | +0.667 |" in text and "2/1/0" in text
    assert "| refused | 3 | +0.333 |" in text
    assert "TTFT p50 ratio new/old: 0.50 over 3 questions" in text
    assert "| citation correct (both answered) | 2 |" in text
