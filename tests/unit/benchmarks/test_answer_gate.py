"""benchmarks/answer_gate.py: a run with the coverage gate against the same run without it."""

from __future__ import annotations

from benchmarks.answer_gate import as_run, cited_numbers, group, without_gate


def row(qid: str, *, refused: bool, accuracy: float, reason: str | None = None, text: str | None = None,
        **extra) -> dict:
    check = {"ok": reason is None, "focus": "other", **({"reason": reason} if reason else {})}
    return {"qid": qid, "question": "Who won?", "gold": ["Joe Burrow"], "all_of": [], "refused": refused,
            "accuracy": accuracy, "answer_check": check, "refused_answer": text, **extra}


def test_only_the_gate_refusals_are_given_back_and_scored():
    gated_right = row("q1", refused=True, accuracy=0.0, reason="question_not_covered", text="Joe Burrow won [1].")
    gated_wrong = row("q2", refused=True, accuracy=0.0, reason="question_not_covered", text="LSU won [1].")
    verifier = row("q3", refused=True, accuracy=0.0, text="Joe Burrow [2].")  # refused by the citation check
    answered = row("q4", refused=False, accuracy=1.0)
    assert without_gate(gated_right) == (1.0, False)
    assert without_gate(gated_wrong) == (0.0, False)
    assert without_gate(verifier) == (0.0, True)
    assert without_gate(answered) == (1.0, False)
    report = as_run([gated_right, gated_wrong, verifier, answered])
    # gate off: 2 right of 4, 1 refusal, 1 wrong answer; as run: 1 right, 3 refusals, no wrong answer
    assert "| gate off | 4 | 0.500 | 0.250 | 0.250 |" in report
    assert "| gate on (as run) | 4 | 0.250 | 0.750 | 0.000 |" in report


def test_robustness_rows_group_by_test_and_use_their_supported_citations():
    noise_only = {"test": "rejection", "ratio": None,
                  "cited": [{"number": 2, "supported": True}, {"number": 3, "supported": False}]}
    assert group(noise_only) == "rejection (noise only)" and cited_numbers(noise_only) == {2}
    assert group({"test": "noise", "ratio": 0.8}) == "noise ratio 0.8"
    assert group({"cited": [1, 4]}) == "answers (retrieved)" and cited_numbers({"cited": [1, 4]}) == {1, 4}
    assert cited_numbers({"cited": [{"number": 5, "supported": False}]}) == {5}  # none supported: all cited
