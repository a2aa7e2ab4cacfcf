"""`rag eval --robustness`: controlled contexts (positives, judged and BM25 hard negatives,
partial evidence, counterfactual passages) answered through the real pipeline after
retrieval, with a scripted LLM and a hash embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from eval.contexts import ContextBuilder, contains_any, read_counterfactuals, window_around, windows
from eval.datasets import load_dataset
from eval.report import read_jsonl
from eval.robustness import noticed_conflict, trials
from eval.robustness_report import NOISE_PNG, PER_QUERY_FILE, RobustnessSpec, run_robustness
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import ConfigError
from rag.factory import build_services
from rag.generation import estimate_tokens
from rag.settings import Settings
from rag.testing import HashEmbedder

REFUSAL = "I could not find this in the documents."
DOCS = {
    "dose": "The adult dose of aspirin is 500 mg every four hours. It is taken with water.",
    "bayer": "Aspirin was first sold by Bayer in 1899. Aspirin tablets are white and the dose is printed on them.",
    "ibu": "The adult dose of ibuprofen is 200 mg. Aspirin and ibuprofen are both pain killers.",
    "willow": "Willow bark contains salicin, a chemical relative of aspirin used for adult pain.",
    "hist": "The history of aspirin dose advice changed over the decades.",
    "north": "The Acme river flows along France in the north.",
    "south": "Further south the Acme river reaches Spain.",
    "acme": "Acme is also the name of a cartoon company unrelated to any river.",
    **{f"sky{i}": f"Report {i}: the sky over Elbonia is blue." for i in range(1, 6)},
    **{f"elb{i}": f"Elbonia note {i}: the sky over Elbonia holds clouds of mud on day {i}." for i in range(1, 6)},
}
QUERIES = {"q1": "What is the adult dose of aspirin?", "q2": "Which countries does the Acme river reach?",
           "q3": "What colour is the sky over Elbonia?"}
QRELS = [("q1", "dose", 1), ("q1", "bayer", 0), ("q1", "ibu", 0), ("q2", "north", 1), ("q2", "south", 1),
         *[("q3", f"sky{i}", 1) for i in range(1, 6)]]
ANSWERS = [{"_id": "q1", "doc_id": "dose", "answers": ["500 mg"],
            "counterfactual": {"passage": "The adult dose of aspirin is 900 mg every four hours.",
                               "answers": ["900 mg"]}},
           {"_id": "q2", "answers": [], "all_of": [["France"], ["Spain"]]},
           {"_id": "q3", "answers": ["blue"]}]


def write_dataset(root: Path, answers=ANSWERS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    (root / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    return root


def reply(messages) -> str:
    """Answers what the last user turn's sources state; the refusal when they state nothing known."""
    text = messages[-1]["content"]
    if "900 mg" in text and "500 mg" in text:
        return "The sources disagree: 500 mg [1] or 900 mg [2]."
    if "500 mg" in text:
        return "The adult dose is 500 mg [1]."
    if "France" in text and "Spain" in text:
        return "It reaches France [1] and Spain [2]."
    if "France" in text:
        return "It reaches France [1]."
    if "blue" in text:
        return "The sky is blue [1]."
    return REFUSAL


@pytest.fixture
def dataset_dir(tmp_path):
    return write_dataset(tmp_path / "tiny")


def services(tmp_path, llm=None, **settings):
    # the scripted reply cites [1] wherever the answer is (noise-citation metrics count that): the
    # coverage gate would refuse some of those, which is not what these tests measure
    settings = Settings(data_dir=tmp_path / "data", verify_citations=False, **{"answer_min_coverage": 0, **settings})
    return build_services(settings, embedder=HashEmbedder(dim=64), llm=llm or ScriptedLLM(reply))


def run(tmp_path, dataset_dir, llm=None, settings=None, **kwargs):
    svc = services(tmp_path, llm, **(settings or {}))
    try:
        return run_robustness(svc, RobustnessSpec(str(dataset_dir), out_dir=tmp_path / "out", **kwargs),
                              show_progress=False)
    finally:
        svc.close()


# -- windows and passages --------------------------------------------------------------------


def test_windows_are_whole_sentences_within_the_budget():
    text = " ".join(f"Sentence number {i} says something about aspirin doses." for i in range(40))
    spans = windows(text, 40)
    assert len(spans) > 5
    assert all(estimate_tokens(text[s:e]) <= 40 for s, e in spans)
    assert all(text[s:e].endswith(".") and text[s] == "S" for s, e in spans)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    start = text.index("number 20")
    s, e = window_around(text, start, start + 9, 40)
    assert s <= start < start + 9 <= e and estimate_tokens(text[s:e]) <= 40


def test_judged_negatives_come_first_then_bm25_never_relevant_nor_holding_the_answer(dataset_dir):
    dataset = load_dataset(str(dataset_dir))
    builder = ContextBuilder(dataset, 100, read_counterfactuals(dataset))
    try:
        (positive,) = builder.positives("q1")
        assert positive.doc_id == "dose" and "500 mg" in positive.text
        noise = builder.noise("q1", 4)
        assert [p.origin for p in noise] == ["judged", "judged", "bm25", "bm25"]
        assert {p.doc_id for p in noise[:2]} == {"bayer", "ibu"}
        assert all(p.doc_id != "dose" and "500 mg" not in p.text for p in noise)
        assert len({p.doc_id for p in noise}) == 4  # one window per passage
    finally:
        builder.close()


def test_ratios_give_round_r_k_noise_and_the_rest_positives(dataset_dir):
    dataset = load_dataset(str(dataset_dir))
    builder = ContextBuilder(dataset, 100)
    try:
        skipped: dict = {}
        noise = {t.ratio: t for t in trials(builder, "q3", k=5, ratios=(0.0, 0.2, 0.4, 0.6, 0.8), seed=0,
                                            skipped=skipped) if t.test == "noise"}
        for ratio, n_noise in ((0.0, 0), (0.2, 1), (0.4, 2), (0.6, 3), (0.8, 4)):
            kinds = [p.kind for p in noise[ratio].passages]
            assert kinds.count("noise") == n_noise and kinds.count("positive") == 5 - n_noise
        # q1 has one relevant passage: one positive, and the noise count of the ratio
        one = [t for t in trials(builder, "q1", k=5, ratios=(0.0, 0.8), seed=0, skipped=skipped) if t.test == "noise"]
        assert [[p.kind for p in t.passages].count("positive") for t in one] == [1, 1]
        assert [[p.kind for p in t.passages].count("noise") for t in one] == [0, 4]
        assert skipped["integration"]["q1"] == "fewer than 2 all_of parts"
    finally:
        builder.close()


def test_contexts_are_reproducible_and_the_seed_changes_the_order(dataset_dir):
    dataset = load_dataset(str(dataset_dir))
    builder = ContextBuilder(dataset, 100)
    try:
        def order(seed):
            return [[p.id for p in t.passages] for t in trials(builder, "q3", k=5, ratios=(0.4,), seed=seed,
                                                                  skipped={})]
        assert order(0) == order(0)
        assert any(order(s) != order(0) for s in range(1, 6))
        assert sorted(order(0)[0]) == sorted(order(3)[0])  # same passages, other order
    finally:
        builder.close()


def test_partial_evidence_windows_hold_a_part_each_but_never_all(dataset_dir):
    dataset = load_dataset(str(dataset_dir))
    builder = ContextBuilder(dataset, 100)
    try:
        partial, why = builder.partials("q2")
        assert why == "" and {p.doc_id for p in partial} == {"north", "south"}
        assert all(contains_any(p.text, ["France", "Spain"]) and not ("France" in p.text and "Spain" in p.text)
                   for p in partial)
    finally:
        builder.close()


def test_counterfactual_field_is_read_and_malformed_rows_are_recorded(tmp_path):
    rows = [{**ANSWERS[0], "counterfactual": {"passage": "x"}}, {**ANSWERS[2], "counterfactual": {"doc_id": "bayer",
                                                                                               "answers": "white"}}]
    dataset = load_dataset(str(write_dataset(tmp_path / "cf", rows)))
    cfs = read_counterfactuals(dataset)
    assert set(cfs) == {"q3"} and cfs["q3"].doc_id == "bayer" and cfs["q3"].answers == ("white",)
    assert any("counterfactual.answers" in reason for reason in dataset.issues.counts)


def test_conflict_rule_in_english_and_chinese():
    assert noticed_conflict("The sources disagree on the dose.", ["500 mg"], ["900 mg"])
    assert noticed_conflict("It is 500 mg, one source says 900 mg.", ["500 mg"], ["900 mg"])
    assert not noticed_conflict("It is 900 mg.", ["500 mg"], ["900 mg"])
    assert noticed_conflict("资料之间存在矛盾。", ["北京"], ["上海"])


# -- the run and its report ------------------------------------------------------------------


def test_run_scores_every_ability_and_writes_the_report_with_the_chart(dataset_dir, tmp_path):
    result = run(tmp_path, dataset_dir, seed=1)
    rows = read_jsonl(tmp_path / "out" / PER_QUERY_FILE)
    assert len(rows) == len(result.run.rows) == 3 * 5 + 3 + 1 + 1  # noise x 3, rejection x 3, integration, cf
    noise = [r for r in rows if r["test"] == "noise"]
    assert all(r["accuracy"] == 1.0 and not r["refused"] for r in noise if r["qid"] != "q2")
    # q2 needs both of its relevant passages: at ratio 0.8 only one of them fits beside 4 noise windows
    assert {r["ratio"]: r["accuracy"] for r in noise if r["qid"] == "q2"} == {0.0: 1.0, 0.2: 1.0, 0.4: 1.0,
                                                                              0.6: 1.0, 0.8: 0.0}
    rejection = [r for r in rows if r["test"] == "rejection"]
    assert all(r["refused"] and r["refusal_reason"] == "model_refused" for r in rejection)
    (integration,) = [r for r in rows if r["test"] == "integration"]
    assert integration["accuracy"] == 1.0 and integration["parts_found"] == 1.0
    (cf,) = [r for r in rows if r["test"] == "counterfactual"]
    assert cf["noticed_conflict"] == 1.0 and cf["misled"] == 0.0 and cf["accuracy"] == 1.0
    assert {p["kind"] for p in cf["passages"]} == {"positive", "counterfactual"}
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert f"![accuracy per noise ratio]({NOISE_PNG})" in report and "Negative rejection" in report
    assert (out / NOISE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "report.png").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["robustness"]["k"] == 5 and settings["sample"]["qids"] == result.qids
    summary = {r["name"]: r for r in _table(result.tables["Summary"])}
    assert summary["negative rejection"]["refusal_rate"] == "1.000"


def test_noise_only_answers_are_counted_as_answered_with_what_they_cited(dataset_dir, tmp_path):
    llm = ScriptedLLM(default="The dose is 100 mg [1].")
    result = run(tmp_path, dataset_dir, llm=llm, settings={"answer_check": False}, limit=1, seed=0)
    (row,) = _table(result.tables["Negative rejection"])
    assert row["refusal_rate"] == "0.000" and row["answered"] == "1.000"
    assert row["answered with a model citation"] == "1.000"
    rejection = [r for r in result.run.rows if r["test"] == "rejection"]
    assert all(c["kind"] == "noise" for r in rejection for c in r["cited"])


def test_the_answer_check_refuses_a_dose_no_noise_passage_states(dataset_dir, tmp_path):
    llm = ScriptedLLM(default="The dose is 100 mg [1].")
    result = run(tmp_path, dataset_dir, llm=llm, limit=1, seed=0)
    rejection = [r for r in result.run.rows if r["test"] == "rejection"]
    assert rejection and all(r["refused"] and r["refusal_reason"] == "off_topic_answer" for r in rejection)


@pytest.mark.parametrize("name", ["covidqa", "cmrc2018"])
def test_shipped_datasets_get_bm25_hard_negatives(name):
    dataset = load_dataset(name)
    assert not dataset.judged_negatives
    qids = [q for q in dataset.sample(3, seed=0) if q in dataset.answer_keys]
    builder = ContextBuilder(dataset, 200)
    try:
        for qid in qids:
            golds = list(dataset.answer_keys[qid].answers)
            (trial,) = [t for t in trials(builder, qid, k=5, ratios=(0.8,), seed=0, skipped={}) if t.test == "noise"]
            noise = [p for p in trial.passages if p.kind == "noise"]
            assert len(noise) == 4 and {p.origin for p in noise} == {"bm25"}
            assert not any(p.doc_id in dataset.qrels[qid] or contains_any(p.text, golds, False) for p in noise)
            (positive,) = [p for p in trial.passages if p.kind == "positive"]
            gold = dataset.answers[qid][0]  # the window is centred on the first located gold span
            assert positive.doc_id == gold.doc_id and positive.start <= gold.start < gold.end <= positive.end
    finally:
        builder.close()


def test_bad_options_fail_before_any_work(dataset_dir, tmp_path):
    with pytest.raises(ConfigError, match="--k"):
        run(tmp_path, dataset_dir, k=9)
    with pytest.raises(ConfigError, match="ratios"):
        run(tmp_path, dataset_dir, ratios=(0.0, 1.0))
    with pytest.raises(ConfigError, match="unknown robustness tests"):
        run(tmp_path, dataset_dir, tests=("noise", "speed"))


def test_cli_robustness_prints_the_tables(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("cli.eval_cmds.build_services", lambda settings: services(tmp_path))
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["eval", str(dataset_dir), "--robustness", "--limit", "2", "--ratios", "0,0.4",
                                      "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "## Noise robustness" in result.output and "## Negative rejection" in result.output
    assert {r["ratio"] for r in read_jsonl(out / PER_QUERY_FILE) if r["test"] == "noise"} == {0.0, 0.4}
    bad = CliRunner().invoke(app, ["eval", str(dataset_dir), "--robustness", "--ratios", "0,x"])
    assert bad.exit_code != 0


def test_cli_robustness_runs_only_the_chosen_tests(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("cli.eval_cmds.build_services", lambda settings: services(tmp_path))
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["eval", str(dataset_dir), "--robustness", "--limit", "2",
                                      "--tests", "rejection", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / PER_QUERY_FILE)
    assert rows and {r["test"] for r in rows} == {"rejection"}
    assert "## Negative rejection" in result.output


def _table(markdown: str) -> list[dict[str, str]]:
    lines = [line.strip("|").split("|") for line in markdown.splitlines()]
    header = [c.strip() for c in lines[0]]
    return [dict(zip(header, (c.strip() for c in row))) for row in lines[2:]]


def test_an_invented_answer_over_noise_is_refused_by_the_verifier(dataset_dir, tmp_path):
    """The real post-generation logic runs: with verification on, an answer no source supports
    becomes the refusal, counted as refused by the verifier."""
    settings = Settings(data_dir=tmp_path / "data", verify_citations=True, refuse_unsupported=True)
    svc = build_services(settings, embedder=HashEmbedder(dim=64),
                         llm=ScriptedLLM(default="Penguins are purple zebras [1]."))
    try:
        result = run_robustness(svc, RobustnessSpec(str(dataset_dir), limit=1, ratios=(0.0,), out_dir=tmp_path / "o"),
                                show_progress=False)
    finally:
        svc.close()
    (row,) = _table(result.tables["Negative rejection"])
    assert row["refusal_rate"] == "1.000" and row["verifier refused"] == "1.000" and row["model refused"] == "0.000"
    assert row["check refused"] == "0.000" and "retried" not in row  # no second attempt (issue 32)
    rejection = [r for r in result.run.rows if r["test"] == "rejection"]
    assert all(r["unsupported_answer"] == "Penguins are purple zebras [1]." for r in rejection)
    assert all("retry" not in r for r in rejection)
