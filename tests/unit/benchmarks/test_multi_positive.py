"""benchmarks/multi_positive.py: sentence windows of shipped passages as a multi-positive answer set
that `rag eval` loads as it is (every answer row valid, positives = the windows holding a gold span)."""

from __future__ import annotations

import json

import pytest

from benchmarks.multi_positive import main
from eval.datasets import load_dataset


def test_windows_holding_a_gold_span_are_the_positives_and_the_rest_same_topic_negatives(tmp_path, capsys):
    out = tmp_path / "cmrcwin-4"
    assert main(["cmrc2018", "--docs", "4", "--out", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    data = load_dataset(str(out))
    assert not data.skipped_queries and data.issues.total == 0  # every row of the set is usable
    assert counts["passages"] == len(data.corpus) and counts["queries"] == len(data.qrels) > 0
    assert counts["positives"] == sum(len(rel) for rel in data.qrels.values())
    assert counts["positives"] > counts["queries"]  # most questions have several positive windows
    for qid, rel in data.qrels.items():
        golds = data.answers[qid]
        assert {g.doc_id for g in golds} == set(rel)  # a positive is a window holding a gold span
        for g in golds:
            assert data.corpus[g.doc_id].text[g.start:g.end] == g.text
        paragraph = next(iter(rel)).split("~")[0]
        negatives = [d for d in data.corpus if d.startswith(paragraph + "~") and d not in rel]
        assert negatives and all(data.corpus[d].title == data.corpus[next(iter(rel))].title for d in negatives)


def test_bad_counts_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cmrc2018", "--docs", "0", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--docs and --width must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
