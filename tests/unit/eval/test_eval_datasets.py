import json
import random
from pathlib import Path

import pytest

from eval.datasets import (
    CorpusDoc,
    CorpusFolder,
    GoldAnswer,
    align_answer,
    corpus_file_name,
    doc_id_from_source,
    load_dataset,
    offset_check,
    shipped_datasets,
    split_ids,
    write_corpus_as_files,
)
from rag.errors import ConfigError, NotFound

DOC_A = "Alpha title\n\nThe virus spreads by droplets. Incubation lasts 5 days."
DOC_B = "病毒通过飞沫传播。潜伏期为五天。"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_dataset(root: Path, answers: list[dict] | None = None, qrels: str | None = None) -> Path:
    folder = root / "mini"
    folder.mkdir()
    _write_jsonl(folder / "corpus.jsonl", [
        {"_id": "a", "title": "Alpha title", "text": DOC_A},
        {"_id": "b/2", "title": "", "text": DOC_B},
        {"_id": 7, "text": "numeric id"},
    ])
    _write_jsonl(folder / "queries.jsonl", [
        {"_id": "q1", "text": "How does it spread?"},
        {"_id": "q2", "text": "潜伏期多长？"},
        {"_id": "q3", "text": "no judgements"},
        {"_id": "q4", "text": "only a zero judgement"},
    ])
    (folder / "qrels.tsv").write_text(
        qrels if qrels is not None
        else "query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tb/2\t2\nq2\ta\t1\nq4\ta\t0\nq9\ta\t1\n",
        encoding="utf-8",
    )
    if answers is not None:
        _write_jsonl(folder / "answers.jsonl", answers)
    return folder


def test_load_folder_reads_corpus_queries_and_qrels(tmp_path):
    ds = load_dataset(str(make_dataset(tmp_path)))
    assert ds.name == "mini"
    assert ds.corpus["a"] == CorpusDoc("a", "Alpha title", DOC_A)
    assert ds.corpus["7"].title == ""  # numeric ids become strings, title optional
    assert ds.queries["q2"] == "潜伏期多长？"
    # score <= 0 ignored, unknown query q9 dropped, graded score kept
    assert ds.qrels == {"q1": {"a": 1}, "q2": {"b/2": 2, "a": 1}}
    assert ds.answers == {}


def test_answers_are_aligned_to_the_text(tmp_path):
    start = DOC_A.index("droplets")
    answers = [
        {"_id": "q1", "doc_id": "a", "answers": [" droplets", "droplets", "5 days"],
         "answer_starts": [start - 1, start, 0]},
        {"_id": "q2", "doc_id": "b/2", "answers": ["五天", "完全不在文中"], "answer_starts": [-1, -1]},
    ]
    ds = load_dataset(str(make_dataset(tmp_path, answers)))
    # leading space stripped, duplicate removed, wrong offset re-located to the real occurrence
    assert ds.answers["q1"] == [GoldAnswer("droplets", start, "a"), GoldAnswer("5 days", DOC_A.index("5 days"), "a")]
    # a -1 offset is located in the text when the answer occurs there; an answer that does not
    # occur in the document cannot mark an answer chunk, but still counts for answer accuracy
    assert ds.answers["q2"] == [GoldAnswer("五天", DOC_B.index("五天"), "b/2")]
    assert ds.answer_keys["q2"].answers == ("五天", "完全不在文中")


def test_answers_infer_doc_and_locate_missing_offsets(tmp_path):
    answers = [{"_id": "q1", "answers": ["Incubation lasts 5 days", "not in the text"], "answer_starts": [-1, 3]}]
    ds = load_dataset(str(make_dataset(tmp_path, answers)))
    assert ds.answers["q1"] == [GoldAnswer("Incubation lasts 5 days", DOC_A.index("Incubation"), "a")]
    assert offset_check(ds) == {"total": 1, "exact": 1, "mismatch": 0, "no_offset": 0}


def test_raw_offsets_are_kept_without_alignment(tmp_path):
    answers = [{"_id": "q1", "doc_id": "a", "answers": ["droplets", "x"], "answer_starts": [3, -1]}]
    ds = load_dataset(str(make_dataset(tmp_path, answers)), align_offsets=False)
    assert ds.answers["q1"] == [GoldAnswer("droplets", 3, "a"), GoldAnswer("x", None, "a")]
    assert offset_check(ds) == {"total": 2, "exact": 0, "mismatch": 1, "no_offset": 1}


def test_align_answer_prefers_the_occurrence_nearest_the_given_offset():
    text = "ab x ab x ab"
    assert align_answer(text, "ab", 9) == ("ab", 10)
    assert align_answer(text, "ab", None) == ("ab", 0)
    assert align_answer(text, "  ", 0) == ("", None)
    assert align_answer(text, "zz", 0) == ("zz", None)


def test_sample_is_reproducible_and_only_judged_queries(tmp_path):
    ds = load_dataset(str(make_dataset(tmp_path)))
    assert ds.sample(None, seed=1) == ["q1", "q2"]
    assert ds.sample(10, seed=1) == ["q1", "q2"]
    assert ds.sample(0, seed=1) == []
    one = ds.sample(1, seed=3)
    assert one == ds.sample(1, seed=3) and one[0] in {"q1", "q2"}
    with pytest.raises(ConfigError):
        ds.sample(-1, seed=0)


def test_sample_draws_from_sorted_ids(tmp_path):
    ds = load_dataset(str(make_dataset(tmp_path)))
    ds.queries = {f"q{i}": "x" for i in range(50)}
    ds.qrels = {f"q{i}": {"a": 1} for i in reversed(range(50))}
    assert ds.sample(5, seed=42) == random.Random(42).sample(sorted(ds.qrels), 5)


def test_missing_folder_and_files_are_not_found(tmp_path):
    with pytest.raises(NotFound, match="neither a shipped dataset"):
        load_dataset(str(tmp_path / "nope"))
    folder = make_dataset(tmp_path)
    (folder / "qrels.tsv").unlink()
    with pytest.raises(NotFound, match="qrels.tsv nor qrels/test.tsv"):
        load_dataset(str(folder))


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{not json\n', "corpus.jsonl:2: invalid JSON"),
        ("corpus.jsonl", '{"_id": "z"}\n{"_id": "a", "text": "x"}\n', "corpus.jsonl:1: missing text"),
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "corpus.jsonl:2: duplicate"),
        ("queries.jsonl", '["q1", "text"]\n{"_id": "q1", "text": "x"}\n', "queries.jsonl:1: not a JSON object"),
        ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1\ta\nq1\ta\t1\n", "qrels.tsv:2: expected 3"),
        ("qrels.tsv", "q1\ta\thigh\nq1\ta\t1\n", "qrels.tsv:1: score is not a number ('high')"),
        ("answers.jsonl", '{"_id": "q1", "doc_id": "zz", "answers": ["x"]}\n', "answers.jsonl:1: unknown document"),
        ("answers.jsonl", '{"_id": "q1", "doc_id": "a", "answers": ["x"], "answer_starts": [1, 2]}\n', "as long as"),
        ("answers.jsonl", '{"_id": "q1", "answers": "x"}\n', "answers.jsonl:1: 'answers' must be a list"),
        ("answers.jsonl", '{"_id": "q1", "answers": [], "all_of": [["x", 3]]}\n', "answers.jsonl:1: 'all_of'"),
        ("answers.jsonl", '{"_id": "q1", "answers": [" "]}\n', "answers.jsonl:1: no gold answer"),
    ],
)
def test_bad_rows_are_skipped_and_recorded_with_file_and_line(tmp_path, file, content, message):
    folder = make_dataset(tmp_path)
    (folder / file).write_text(content, encoding="utf-8")
    ds = load_dataset(str(folder))
    assert any(message in row for row in ds.issues.rows), ds.issues.rows
    assert ds.issues.total >= 1


@pytest.mark.parametrize(
    ("file", "content"),
    [("corpus.jsonl", '[{"_id": "a", "text": "x"}]\n'), ("queries.jsonl", "not json at all\n"),
     ("qrels.tsv", "q1 a\nq2 b\n"), ("answers.jsonl", "[1, 2]\n")],
)
def test_structurally_unreadable_files_are_fatal(tmp_path, file, content):
    folder = make_dataset(tmp_path)
    (folder / file).write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=file):
        load_dataset(str(folder))


def test_write_corpus_as_files_keeps_exact_text(tmp_path):
    answers = [{"_id": "q1", "doc_id": "a", "answers": ["droplets"], "answer_starts": [DOC_A.index("droplets")]}]
    ds = load_dataset(str(make_dataset(tmp_path, answers)))
    ds.corpus["blank"] = CorpusDoc("blank", "t", "  \n")
    out = tmp_path / "files"
    paths = write_corpus_as_files(ds, out)
    assert sorted(p.name for p in paths) == ["7.txt", "a.txt", "b%2F2.txt"]  # blank skipped
    assert (out / "a.txt").read_bytes() == DOC_A.encode("utf-8")  # no title line added
    for path in paths:
        doc = ds.corpus[doc_id_from_source(str(path))]
        assert path.read_text(encoding="utf-8") == doc.text
    gold = ds.answers["q1"][0]
    assert (out / "a.txt").read_text(encoding="utf-8")[gold.start : gold.end] == "droplets"

    mtime = (out / "a.txt").stat().st_mtime_ns
    assert write_corpus_as_files(ds, out, doc_ids=["a", "a"]) == [out / "a.txt"]
    assert (out / "a.txt").stat().st_mtime_ns == mtime  # unchanged file not rewritten
    with pytest.raises(NotFound):
        write_corpus_as_files(ds, out, doc_ids=["missing"])


def test_file_names_round_trip_for_odd_ids():
    for doc_id in ["DEV_0", "630", "a/b c", ".hidden", "中文", "50%"]:
        name = corpus_file_name(doc_id)
        assert "/" not in name and not name.startswith(".")
        assert doc_id_from_source(f"sub\\dir/{name}") == doc_id


def test_shipped_datasets_load_and_offsets_match():
    assert {"covidqa", "cmrc2018"} <= set(shipped_datasets())
    covid = load_dataset("covidqa")
    assert (len(covid.corpus), len(covid.queries), len(covid.qrels)) == (98, 1380, 1380)
    assert offset_check(covid) == {"total": 1380, "exact": 1380, "mismatch": 0, "no_offset": 0}
    cmrc = load_dataset("cmrc2018")
    assert (len(cmrc.corpus), len(cmrc.queries), len(cmrc.qrels)) == (848, 3219, 3219)
    check = offset_check(cmrc)
    assert check["mismatch"] == 0 and check["exact"] / check["total"] > 0.95
    # every question keeps at least one locatable gold answer
    assert all(any(g.start is not None for g in golds) for golds in cmrc.answers.values())


# -- any BEIR folder: skipped queries, graded and multi-positive qrels, answers without doc_id ---

NEWS = {
    "n1": "The RCEP trade pact was signed by China, Japan and South Korea among fifteen countries.",
    "n2": "Signatories of RCEP include Australia and New Zealand; the pact covers 2.2 billion people.",
    "n3": "A hard negative: RCEP talks stalled in 2019 when India withdrew.",
    "n4": "Unrelated passage about the weather in Oslo.",
}


def make_beir(root: Path, queries: list[dict], qrels: str, answers: list[dict] | None = None,
              qrels_name: str = "qrels.tsv") -> Path:
    folder = root / "news"
    folder.mkdir()
    _write_jsonl(folder / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in NEWS.items()])
    _write_jsonl(folder / "queries.jsonl", queries)
    (folder / qrels_name).parent.mkdir(parents=True, exist_ok=True)
    (folder / qrels_name).write_text(qrels, encoding="utf-8")
    if answers is not None:
        _write_jsonl(folder / "answers.jsonl", answers)
    return folder


def test_unevaluable_queries_are_skipped_with_their_reason(tmp_path):
    queries = [{"_id": "ok", "text": "Who signed RCEP?"}, {"_id": "empty", "text": "  "},
               {"_id": "dup", "text": "first text"}, {"_id": "dup", "text": "another text"},
               {"_id": "same", "text": "repeated"}, {"_id": "same", "text": "repeated"},
               {"_id": "gone", "text": "points at missing passages"}, {"_id": "neg", "text": "only negatives"},
               {"_id": "nojudge", "text": "never judged"}, {"_id": 12, "text": "numeric id"}]
    qrels = ("query-id\tcorpus-id\tscore\nok\tn1\t2\nok\tn2\t1\nok\tn3\t0\nempty\tn1\t1\ndup\tn1\t1\n"
             "same\tn2\t1\ngone\tmissing-1\t1\ngone\tmissing-2\t2\nneg\tn3\t0\n12\tn4\t1\nghost\tn1\t1\n")
    ds = load_dataset(str(make_beir(tmp_path, queries, qrels)))
    assert ds.evaluable() == ["12", "ok", "same"]
    assert ds.skipped_queries == {"empty": "empty text", "dup": "duplicate id with different texts",
                                  "gone": "its relevant passages are missing from the corpus",
                                  "neg": "no passage judged relevant", "nojudge": "no relevance judgements"}
    assert ds.qrels["ok"] == {"n1": 2, "n2": 1}  # graded, several positives
    assert ds.judged_negatives == {"ok": {"n3": 0}, "neg": {"n3": 0}}  # kept for robustness evaluations
    assert any("repeated query row" in row for row in ds.issues.rows)
    assert ds.issues.counts["qrels.tsv: judgements of a query not in queries.jsonl"] == 1  # ghost
    assert ds.issues.counts["qrels.tsv: judgements of a passage not in corpus.jsonl"] == 2
    assert ds.sample(None) == ["12", "ok", "same"]


def test_qrels_from_beir_split_folder_and_trec_format(tmp_path):
    queries = [{"_id": "q1", "text": "Who signed RCEP?"}, {"_id": "q2", "text": "Who left?"}]
    folder = make_beir(tmp_path, queries, "q1\tn1\t1\n", qrels_name="qrels/test.tsv")
    (folder / "qrels" / "dev.tsv").write_text("q2 0 n3 1\nq1 Q0 n2 3\n", encoding="utf-8")  # TREC columns
    assert load_dataset(str(folder)).qrels == {"q1": {"n1": 1}}  # default: qrels.tsv, else qrels/test.tsv
    dev = load_dataset(str(folder), qrels_split="dev")
    assert dev.qrels == {"q2": {"n3": 1}, "q1": {"n2": 3}} and dev.qrels_file == folder / "qrels" / "dev.tsv"
    with pytest.raises(NotFound, match=r"no qrels/train.tsv \(qrels splits there: dev, test\)"):
        load_dataset(str(folder), qrels_split="train")
    (folder / "qrels.tsv").write_text("q2\tn4\t1\n", encoding="utf-8")
    assert load_dataset(str(folder)).qrels == {"q2": {"n4": 1}}  # qrels.tsv wins when both exist


def test_answers_without_doc_id_are_located_in_every_relevant_passage(tmp_path):
    queries = [{"_id": "q1", "text": "Which countries signed RCEP?"}, {"_id": "q2", "text": "How many people?"},
               {"_id": "q3", "text": "Who withdrew?"}]
    qrels = "q1\tn1\t1\nq1\tn2\t1\nq2\tn1\t1\nq2\tn2\t1\nq3\tn1\t1\nq3\tn3\t0\n"
    answers = [{"_id": "q1", "answers": ["RCEP"], "all_of": [["China", "中国"], "Japan", ["Australia"]]},
               {"_id": "q2", "answers": ["2.2  BILLION people"]},
               {"_id": "q3", "answers": ["India"]},  # only in the judged-negative passage
               {"_id": "nobody", "answers": ["x"]}]
    ds = load_dataset(str(make_beir(tmp_path, queries, qrels, answers)))
    assert ds.answers["q1"] == [GoldAnswer("RCEP", NEWS["n1"].index("RCEP"), "n1"),
                                GoldAnswer("RCEP", NEWS["n2"].index("RCEP"), "n2")]
    assert ds.answer_keys["q1"].all_of == (("China", "中国"), ("Japan",), ("Australia",))
    # not verbatim in the text, but present after normalisation: matched by text, no offset
    assert ds.answers["q2"] == [GoldAnswer("2.2  BILLION people", None, "n2")]
    assert "q3" not in ds.answers and ds.doc_level_only == ["q3"]
    assert ds.answer_keys["q3"].answers == ("India",)
    assert any("answers of a query that is not evaluated" in row for row in ds.issues.rows)


def test_streaming_keeps_only_the_texts_scoring_needs(tmp_path):
    queries = [{"_id": "q1", "text": "Who signed RCEP?"}]
    answers = [{"_id": "q1", "doc_id": "n4", "answers": ["Oslo"]}]
    folder = make_beir(tmp_path, queries, "q1\tn1\t1\nq1\tn3\t0\n", answers)
    seen = []
    ds = load_dataset(str(folder), keep_text="judged", on_passage=seen.append)
    assert [d.id for d in seen] == ["n1", "n2", "n3", "n4"]  # every passage streamed once
    assert sorted(ds.corpus) == ["n1", "n4"]  # relevant, or named by an answer
    assert ds.doc_ids == {"n1", "n2", "n3", "n4"}
    writer = CorpusFolder(tmp_path / "files")
    (tmp_path / "files" / "stale.txt").write_text("old passage")
    for doc in seen:
        writer.write(doc)
    assert writer.prune() == 1 and sorted(p.name for p in (tmp_path / "files").iterdir()) == [
        "n1.txt", "n2.txt", "n3.txt", "n4.txt"]
    # a title stays out of the file (offsets of gold spans hold) and goes to the ingest by file name
    assert writer.titles == {}  # these passages have none
    writer.write(CorpusDoc("n5", " RCEP signing ", "Fifteen countries signed RCEP in 2020."))
    assert writer.titles == {"n5.txt": "RCEP signing"}
    assert (tmp_path / "files" / "n5.txt").read_text() == "Fifteen countries signed RCEP in 2020."


def test_split_halves_are_reproducible_disjoint_and_complete():
    ids = [f"q{i}" for i in range(101)]
    dev, test = split_ids(ids, "dev", seed=3), split_ids(ids, "test", seed=3)
    assert dev == split_ids(reversed(ids), "dev", seed=3)  # independent of the input order
    assert not set(dev) & set(test) and sorted(dev + test) == sorted(ids)
    assert (len(dev), len(test)) == (50, 51)
    assert split_ids(ids, "all", seed=3) == sorted(ids)
    assert split_ids(ids, "dev", seed=4) != dev
    with pytest.raises(ConfigError, match="unknown split 'train'"):
        split_ids(ids, "train")


def test_sample_applies_the_split_before_the_limit(tmp_path):
    queries = [{"_id": f"q{i}", "text": f"question {i}"} for i in range(20)]
    qrels = "".join(f"q{i}\tn1\t1\n" for i in range(20))
    ds = load_dataset(str(make_beir(tmp_path, queries, qrels)))
    test = ds.sample(None, seed=5, split="test")
    assert test == split_ids(ds.evaluable(), "test", seed=5) and len(test) == 10
    limited = ds.sample(4, seed=5, split="test")
    assert set(limited) <= set(test) and limited == ds.sample(4, seed=5, split="test")


def test_skip_draws_a_fresh_sample_of_the_same_half(tmp_path):
    queries = [{"_id": f"q{i}", "text": f"question {i}"} for i in range(2000)]
    qrels = "".join(f"q{i}\tn1\t1\n" for i in range(2000))
    ds = load_dataset(str(make_beir(tmp_path, queries, qrels)))
    dev = set(ds.sample(None, seed=0, split="dev"))
    first = ds.sample(150, seed=0, split="dev")
    fresh = ds.sample(150, seed=0, split="dev", skip=150)
    assert len(fresh) == 150 and set(fresh) <= dev and not set(fresh) & set(first)
    assert fresh == ds.sample(150, seed=0, split="dev", skip=150)
    assert ds.sample(150, seed=0, split="dev", skip=0) == first
    rest = ds.sample(None, seed=0, split="dev", skip=150)
    assert set(rest) == dev - set(first) and rest == sorted(rest)
    assert ds.sample(None, seed=0, split="dev", skip=5000) == []
    with pytest.raises(ConfigError, match="skip must be >= 0"):
        ds.sample(3, skip=-1)
