"""benchmarks/sources_replay.py: a rule on the ranking picks, per question, the one-source run's
answer where it fires and the full run's elsewhere."""

from __future__ import annotations

import json

import pytest

from benchmarks.answers_compare import load
from benchmarks.sources_replay import fires, replay, table
from rag.single_source import SingleRule


def hit(score, **ranks):
    return {"chunk_id": f"c{score}", "doc_id": "d", "score": score, "rerank_score": None, "ranks": ranks}


AGREED = [hit(0.04, dense=1, bm25=1), hit(0.02, dense=2, bm25=3)]  # both lists first, twice the second
SPLIT = [hit(0.03, dense=1, bm25=4), hit(0.029, dense=3, bm25=1)]  # the lists disagree, scores close


def row(qid, accuracy, refused=False, ranking=None):
    out = {"qid": qid, "accuracy": accuracy, "refused": refused}
    if ranking is not None:
        out["ranking"] = ranking
    return out


def test_the_rules_on_a_recorded_ranking():
    agree, ratio = SingleRule.parse("agree"), SingleRule.parse("ratio>=1.5")
    assert fires(agree, AGREED) and not fires(agree, SPLIT) and not fires(agree, [hit(0.04, dense=1)])
    assert fires(ratio, AGREED) and not fires(ratio, SPLIT) and fires(ratio, AGREED[:1])  # no second: no bound
    reranked = [{**AGREED[0], "rerank_score": 0.9}, {**AGREED[1], "rerank_score": 0.7}]
    assert not fires(ratio, reranked)  # the rerank score decides when there is one: 0.9 < 1.5 x 0.7
    assert not fires(None, AGREED) and not fires(agree, [])


def test_a_rule_takes_the_one_source_answer_only_where_it_fires(tmp_path):
    full = {"a": row("a", 0.0, ranking=AGREED), "b": row("b", 1.0, ranking=SPLIT), "c": row("c", 0.0, True, SPLIT)}
    one = {"a": row("a", 1.0), "b": row("b", 0.0), "c": row("c", 1.0)}
    results = {r["rule"]: r for r in replay(full, one, [1.5])}
    assert results["off"]["accuracy"] == pytest.approx(1 / 3) and results["off"]["fired"] == 0
    assert results["always"]["accuracy"] == pytest.approx(2 / 3) and results["always"]["fired"] == 3
    agreed = results["agree"]  # fires on a only: a turns right, b stays right, c stays refused
    assert agreed["fired"] == 1 and agreed["accuracy"] == pytest.approx(2 / 3)
    assert agreed["refused"] == pytest.approx(1 / 3) and agreed["wrong"] == 0.0
    assert agreed["delta"] == pytest.approx(1 / 3) and agreed["wtl"] == "1/2/0"
    assert results["ratio>=1.5"]["fired"] == 1 and results["agree+ratio>=1.5"]["fired"] == 1
    assert "| agree | 3 | 1 | 0.667 |" in table(list(results.values()))
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in full.values()))
    assert load(path) == full


def test_a_run_without_the_ranking_is_refused_with_a_message():
    with pytest.raises(SystemExit, match="no ranking"):
        replay({"a": row("a", 1.0)}, {"a": row("a", 1.0)}, [1.5])
    with pytest.raises(SystemExit, match="no question in common"):
        replay({"a": row("a", 1.0, ranking=AGREED)}, {"b": row("b", 1.0)}, [])
