"""Multi-turn evaluation: follow-ups made from a dataset's questions, and the evaluation of each
condensing method through the real ingest, stores and pipeline (hash embedder, scripted LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from eval.datasets import load_dataset
from eval.multiturn import FOLLOW_UP, IN_FULL, MultiturnSpec, build_conversations, entity_of, follow_up, run_multiturn
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import ConfigError
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.eval.test_eval_runner import lines

DOCS = {
    "x200": ("Acme X200", "The Acme X200 warranty lasts two years. The Acme X200 warranty does not cover water "
                          "damage. The Acme X200 battery lasts four hours."),
    "leave": ("年假制度", "员工年假每年十天。工作满五年的员工年假十五天。"),
    "etna": ("", "Mount Etna in Sicily is an active volcano that erupted in 2021."),
}
QUERIES = {"w1": "How long is the Acme X200 warranty?", "w2": "What does the Acme X200 warranty not cover?",
           "w3": "How long does the Acme X200 battery last?",
           "l1": "年假制度规定年假有几天？", "l2": "年假制度对工作满五年的员工规定几天？",
           "e1": "When did Mount Etna erupt?"}
QRELS = {"w1": "x200", "w2": "x200", "w3": "x200", "l1": "leave", "l2": "leave", "e1": "etna"}
ANSWERS = {"w1": "two years", "w2": "water damage", "w3": "four hours", "l1": "十天", "l2": "十五天", "e1": "2021"}


def write_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(lines({"_id": k, "title": t, "text": v} for k, (t, v) in DOCS.items()))
    (root / "queries.jsonl").write_text(lines({"_id": k, "text": v} for k, v in QUERIES.items()))
    qrels = "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    (root / "answers.jsonl").write_text(lines(
        {"_id": q, "doc_id": QRELS[q], "answers": [a], "answer_starts": [DOCS[QRELS[q]][1].index(a)]}
        for q, a in ANSWERS.items()))
    return root


@pytest.mark.parametrize("question, anchor, style, asked, subject", [
    ("What does the Acme X200 warranty not cover?", "Acme X200", "pronoun", "What does it warranty not cover?",
     "Acme X200"),
    ("What is the Acme X200's battery life?", "Acme X200", "pronoun", "What is its battery life?", "Acme X200"),
    ("What is the size of the bovine coronavirus?", "bovine coronavirus genome", "dropped", "What is the size?",
     "bovine coronavirus"),
    ("《战国无双3》是由哪两个公司合作开发的？", "战国无双3", "pronoun", "它是由哪两个公司合作开发的？", "战国无双3"),
    ("锣鼓经常用的节奏型称为什么？", "锣鼓经是什么？", "dropped", "常用的节奏型称为什么？", "锣鼓经"),
])
def test_a_follow_up_takes_out_the_shared_subject(question, anchor, style, asked, subject):
    assert follow_up(question, [anchor], style) == (asked, subject)


def test_no_follow_up_without_a_shared_subject_or_own_words():
    assert follow_up("When did Mount Etna erupt?", ["Acme X200"], "pronoun") is None
    assert follow_up("是由什么公司开发的？", ["是由谁写的？"], "pronoun") is None  # only function characters shared
    assert follow_up("Acme X200?", ["Acme X200"], "dropped") is None  # nothing of its own left


def test_entities_asked_about_first():
    assert entity_of("RCEP具体包括哪些国家") == "RCEP"
    assert entity_of("2022年特斯拉交付量") == "特斯拉"
    assert entity_of("What is the main cause of HIV-1 infection in children?") == "HIV-1"
    assert entity_of("what is it?") == ""


def test_conversations_from_shared_passages_and_entities(tmp_path):
    dataset = load_dataset(str(write_dataset(tmp_path / "mt")), keep_text="all")
    conversations, skipped = build_conversations(dataset, dataset.evaluable(), seed=0, turns=3)
    by_doc = {c.doc_id: c for c in conversations}
    x200 = by_doc["x200"]
    assert len(x200.turns) == 3 and x200.turns[0].style == "first" and x200.turns[0].asked == x200.turns[0].full
    assert all("Acme X200" not in t.asked and t.subject for t in x200.turns[1:])
    # the history holds the earlier turns as asked, each followed by its gold answer
    history = x200.history(2)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == x200.turns[0].full and history[1]["content"] == ANSWERS[x200.turns[0].qid]
    assert "年假制度" not in by_doc["leave"].turns[1].asked
    # a passage with one question: the entity is asked about first, with no reply in the history
    etna = by_doc["etna"]
    assert [t.asked for t in etna.turns] == ["Tell me about Mount Etna.", "When did it erupt?"]
    assert etna.history(1) == [{"role": "user", "content": "Tell me about Mount Etna."}]
    assert not skipped
    with pytest.raises(ConfigError):
        build_conversations(dataset, dataset.evaluable(), turns=4)


def make_services(tmp_path, llm):
    settings = Settings(data_dir=tmp_path / "data", chunk_size=400, chunk_overlap=0)
    return build_services(settings, embedder=HashEmbedder(dim=64), llm=llm)


def test_each_follow_up_is_scored_against_the_question_in_full(tmp_path):
    dataset_dir = write_dataset(tmp_path / "mt")
    # the rewrite keeps neither the follow-up's words nor the subject: rejected, the previous question is used
    services = make_services(tmp_path, ScriptedLLM(["Tell me something."] * 20))
    try:
        result = run_multiturn(services, MultiturnSpec(str(dataset_dir), out_dir=tmp_path / "out"))
    finally:
        services.close()
    assert len(result.rows) == 4  # x200: two follow-ups, leave: one, etna: one
    for row in result.rows:
        runs = row["runs"]
        assert set(runs) == {IN_FULL, FOLLOW_UP}
        assert runs[IN_FULL]["standalone"] == row["full"]
        assert runs[FOLLOW_UP]["rejected"] and runs[FOLLOW_UP]["standalone"] == row["asked"]
        assert runs[FOLLOW_UP]["query"].endswith("\n" + row["asked"])
        assert 0 <= runs[FOLLOW_UP]["mrr@10"] <= 1
    table = result.tables["Retrieval of the follow-up"]
    assert "| in full |" in table and "| follow-up |" in table and "rewrites rejected" in table
    report = (tmp_path / "out" / "report.md").read_text()
    assert "4 follow-ups" in report
    turns = [json.loads(line) for line in (tmp_path / "out" / "turns.jsonl").read_text().splitlines()]
    assert len(turns) == 4 and (tmp_path / "out" / "conversations.jsonl").exists()


def test_answers_are_scored_for_the_follow_up_and_in_full(tmp_path):
    dataset_dir = write_dataset(tmp_path / "mt")
    # the answers echo the first source; accuracy and refusals are counted for both
    services = make_services(tmp_path, ScriptedLLM(["The warranty does not cover water damage [1]."] * 40))
    try:
        result = run_multiturn(services, MultiturnSpec(str(dataset_dir), limit=1, answers=True,
                                                       out_dir=tmp_path / "out"))
    finally:
        services.close()
    assert "Answers to the follow-up" in result.tables
    for row in result.rows:
        assert {"accuracy", "refused"} <= set(row["runs"][FOLLOW_UP]) and "accuracy" in row["runs"][IN_FULL]


@pytest.mark.ci
def test_cli_multiturn_prints_the_tables(tmp_path, monkeypatch):
    dataset_dir = write_dataset(tmp_path / "mt")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    # no model answers here: condensing falls back to the follow-up after the previous question
    monkeypatch.setenv("RAG_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    result = CliRunner().invoke(app, ["eval", str(dataset_dir), "--multiturn", "-q", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "## Retrieval of the follow-up" in result.output and "| follow-up |" in result.output
