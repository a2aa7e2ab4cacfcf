"""The evaluation runner on a tiny BEIR dataset, through the real ingest, stores and pipeline
with a hash embedder and a scripted LLM.

The dataset (chunk size 80, no overlap) is built so BM25 can be reasoned about by hand:
- d1 splits into two chunks: "Aspirin: aspirin reduces fever ... Aspirin is cheap." and
  "The adult dose is 500 mg ..."; q1 ("aspirin dose") matches "aspirin" three times in the
  first chunk and "dose" once in the second, so the first chunk ranks first and the answer
  chunk second;
- d2..d5 are one chunk each and q2..q5 share words only with their own document;
- q6 ("zebra stripes") shares no word with any chunk: BM25 returns nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from eval.ablations import ChunkLocator, EvalConfig, parse_compare, parse_config
from eval.datasets import GoldAnswer, load_dataset
from eval.runner import PER_QUERY_FILE, EvalSpec, run_eval
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import ConfigError
from rag.factory import UNSET, build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.text import tokenize
from rag.types import Chunk

DOCS = {
    "d1": "Aspirin: aspirin reduces fever and pain. Aspirin is cheap.\n\nThe adult dose is 500 mg every four hours.",
    "d2": "Emperor penguins live in Antarctica and huddle in winter.",
    "d3": "The Eiffel Tower in Paris was completed in 1889.",
    "d4": "Chlorophyll absorbs blue and red light for photosynthesis.",
    "d5": "Mount Etna in Sicily is an active volcano.",
}
QUERIES = {"q1": "What is the aspirin dose?", "q2": "Where do emperor penguins live?",
           "q3": "When was the Eiffel Tower completed?", "q4": "Which light does chlorophyll absorb?",
           "q5": "Which volcano in Sicily is active?", "q6": "zebra stripes"}
QRELS = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4", "q5": "d5", "q6": "d3"}
ANSWERS = {"q1": "500 mg", "q2": "Antarctica", "q3": "1889", "q4": "blue and red light", "q5": "Mount Etna",
           "q6": "Paris"}


def lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(lines({"_id": k, "title": "", "text": v} for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text(lines({"_id": k, "text": v} for k, v in QUERIES.items()))
    qrels = "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    (root / "answers.jsonl").write_text(lines(
        {"_id": q, "doc_id": QRELS[q], "answers": [a], "answer_starts": [DOCS[QRELS[q]].index(a)]}
        for q, a in ANSWERS.items()))
    return root


class CountingEmbedder(HashEmbedder):
    """Counts corpus texts embedded (ingestion) apart from queries."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.corpus_texts = 0

    def encode_corpus(self, texts):
        self.corpus_texts += len(texts)
        return super().encode_corpus(texts)

    def encode_queries(self, texts):
        return HashEmbedder.encode_corpus(self, texts)


class OverlapReranker:
    """Share of query words found in the passage, as a 0..1 relevance score."""

    name = "overlap-reranker"

    def score(self, query, passages):
        words = set(tokenize(query))
        return [len(words & set(tokenize(p))) / max(len(words), 1) for p in passages]


@pytest.fixture
def dataset_dir(tmp_path):
    return write_dataset(tmp_path / "tiny")


def make_services(tmp_path, embedder=None, llm=UNSET, reranker=None):
    # answer_min_coverage 0: q3's scripted answer cites the wrong source on purpose (citation metrics)
    settings = Settings(data_dir=tmp_path / "data", chunk_size=80, chunk_overlap=0, verify_citations=False,
                        answer_min_coverage=0)
    return build_services(settings, embedder=embedder or HashEmbedder(dim=64), llm=llm, reranker=reranker)


def evaluate(tmp_path, eval_spec, **services):
    """run_eval with fresh services, closed afterwards (an edge store holds its files open)."""
    svc = make_services(tmp_path, **services)
    try:
        return run_eval(svc, eval_spec, show_progress=False)
    finally:
        svc.close()


def spec(dataset_dir, tmp_path, compare="bm25", **kwargs) -> EvalSpec:
    return EvalSpec(str(dataset_dir), parse_compare(compare), out_dir=tmp_path / "out", **kwargs)


def test_bm25_metrics_match_hand_computed_values(dataset_dir, tmp_path):
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path))
    (bm25,) = result.results
    # documents: q1..q5 find their document first, q6 finds nothing
    assert bm25.doc["aggregate"]["hit@1"] == pytest.approx(5 / 6)
    assert bm25.doc["aggregate"]["mrr@10"] == pytest.approx(5 / 6)
    assert bm25.doc["aggregate"]["recall@10"] == pytest.approx(5 / 6)
    # answer chunks: q1's answer chunk is second (rank 2), q2..q5 first, q6 none
    agg = bm25.answer["aggregate"]
    assert agg["hit@1"] == pytest.approx(4 / 6)
    assert agg["hit@3"] == pytest.approx(5 / 6)
    assert agg["mrr@10"] == pytest.approx((0.5 + 4) / 6)
    assert agg["ndcg@10"] == pytest.approx((1 / 1.5849625007211563 + 4) / 6)
    rows = {r["qid"]: r for r in bm25.per_query}
    assert rows["q1"]["answer_chunk_ranks"] == [2] and rows["q6"]["retrieved"] == []
    assert set(bm25.offsets) == {"exact"}  # the .txt parser keeps these short texts: offsets are used


def test_second_run_embeds_nothing(dataset_dir, tmp_path):
    embedder = CountingEmbedder()
    first = evaluate(tmp_path, spec(dataset_dir, tmp_path), embedder=embedder)
    assert first.ingest.count("indexed") == 5 and first.ingest.chunks_added == 6
    embedded = embedder.corpus_texts
    second = evaluate(tmp_path, spec(dataset_dir, tmp_path), embedder=embedder)
    assert second.ingest.count("unchanged") == 5 and second.ingest.chunks_added == 0
    assert embedder.corpus_texts == embedded, "an unchanged corpus must not be embedded again"
    assert second.kb == first.kb == "eval-tiny-recursive-80-0"
    assert second.results[0].answer["aggregate"] == first.results[0].answer["aggregate"]


def test_compare_table_has_one_row_per_config_and_files_are_written(dataset_dir, tmp_path):
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "bm25,dense,hybrid,hybrid+rerank"))
    main = result.tables["Retrieval, answer-chunk level"]
    body = [line for line in main.splitlines()[2:]]
    assert [line.split("|")[1].strip() for line in body] == ["bm25", "dense", "hybrid", "hybrid+rerank"]
    assert "OFF (no reranker model)" in body[3] and "OFF" not in "".join(body[:3])
    assert "Retrieval, document level" in result.tables and "Latency per stage" in result.tables
    out = tmp_path / "out"
    for name in ("report.md", "report.png", "settings.json", PER_QUERY_FILE):
        assert (out / name).is_file(), name
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "hybrid+rerank" in report and "WITHOUT reranking" in report
    saved = json.loads((out / "settings.json").read_text())
    assert saved["settings"]["chunk_size"] == 80 and saved["models"]["embedder"] == "hash-bow-64"
    assert saved["models"]["reranker"] is None and saved["kb"] == "eval-tiny-recursive-80-0"
    rows = [json.loads(line) for line in (out / PER_QUERY_FILE).read_text().splitlines()]
    assert len(rows) == 4 * 6 and {r["config"] for r in rows} == {"bm25", "dense", "hybrid", "hybrid+rerank"}


def test_rerank_row_is_on_when_a_reranker_exists(dataset_dir, tmp_path):
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "hybrid,hybrid+rerank"), reranker=OverlapReranker())
    hybrid, reranked = result.results
    assert not hybrid.rerank_enabled and reranked.rerank_enabled
    # the overlap reranker puts q1's answer chunk ("dose") level with the aspirin chunk; every
    # q2..q5 answer chunk holds all the query's words and ranks first
    assert reranked.answer["aggregate"]["hit@1"] >= 4 / 6
    assert "| on |" in result.tables["Retrieval, answer-chunk level"]


def test_unknown_config_is_a_clear_error():
    with pytest.raises(ConfigError) as err:
        parse_compare("hybrid,magic")
    assert "magic" in err.value.message and "bm25, dense, hybrid" in err.value.message
    assert "+rerank" in err.value.message and "+multi_query" in err.value.message
    with pytest.raises(ConfigError):
        parse_config("hybrid+rerank+rerank")
    with pytest.raises(ConfigError):
        parse_compare(" , ")
    assert parse_config("Hybrid+HyDE+rerank") == EvalConfig("hybrid+hyde+rerank", "hybrid", True, ("hyde",))
    assert [c.name for c in parse_compare("bm25,dense,bm25")] == ["bm25", "dense"]


def test_limit_and_seed_give_a_reproducible_sample(dataset_dir, tmp_path):
    a = evaluate(tmp_path, spec(dataset_dir, tmp_path, limit=3, seed=7))
    b = evaluate(tmp_path, spec(dataset_dir, tmp_path, limit=3, seed=7))
    assert a.qids == b.qids and len(a.qids) == 3
    assert [r["qid"] for r in a.results[0].per_query] == a.qids
    saved = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert saved["sample"] == {"limit": 3, "skip": 0, "seed": 7, "split": "all", "n": 3, "qids": a.qids}
    others = {tuple(evaluate(tmp_path, spec(dataset_dir, tmp_path, limit=3, seed=s)).qids) for s in range(5)}
    assert len(others) > 1, "different seeds should draw different samples"


def _sources(messages) -> dict[int, str]:
    user = messages[-1]["content"]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\[(\d+)\] [^\n]*\n(.*?)(?=\n\n|\Z)", user,
                                                             re.M | re.S)}


def scripted_answers(messages) -> str:
    """q1: a longer answer citing the right source; q3: right answer, wrong source; q6: a
    refusal; others: the gold answer citing the source that holds it."""
    if "fact-checking judge" in messages[-1]["content"]:
        return 'Verdict: {"score": 0.5, "reason": "half"}'
    if "ANSWER" in messages[-1]["content"]:
        return "no idea"  # the relevance judge's reply is unparsable
    qid = next(q for q, text in QUERIES.items() if f"Question: {text}" in messages[-1]["content"])
    if qid == "q6":
        return "I could not find this in the documents."
    sources = _sources(messages)
    gold = ANSWERS[qid]
    holding = [n for n, text in sources.items() if gold in text]
    other = [n for n, text in sources.items() if gold not in text]
    if qid == "q3":
        return f"{gold} [{other[0]}]."
    text = "The dose is 500 mg" if qid == "q1" else gold
    return f"{text} [{holding[0]}]."


def test_answer_metrics(dataset_dir, tmp_path):
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "hybrid", answers=True,
                                     answer_config=parse_config("hybrid")), llm=ScriptedLLM(scripted_answers))
    answers = result.answers
    agg = answers.aggregate
    assert answers.n == 6
    assert agg["em"] == pytest.approx(4 / 6)  # q2..q5 exact; q1 is longer; q6 refused
    assert agg["f1"] == pytest.approx((2 / 3 + 4) / 6)  # q1: {dose, is, 500, mg} vs {500, mg}
    assert agg["contains"] == pytest.approx(5 / 6)
    assert agg["refusal_rate"] == pytest.approx(1 / 6)
    assert agg["citation_correct"] == pytest.approx(4 / 5)  # over the 5 answered; q3 cites a wrong source
    assert "faithfulness" not in agg
    rows = {r["qid"]: r for r in answers.per_query}
    assert rows["q6"]["refused"] and rows["q6"]["citation_correct"] is None
    assert rows["q3"]["citation_correct"] == 0.0 and rows["q1"]["citation_correct"] == 1.0
    assert "Answers" in result.tables
    saved = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert len(saved) == 6
    # each row keeps the retrieved ranking: documents, fused scores falling, ranks in the lists that found them
    ranking = rows["q1"]["ranking"]
    assert ranking and [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    assert all(r["doc_id"] and r["ranks"] and all(v >= 1 for v in r["ranks"].values()) for r in ranking)
    assert {k.split(":")[0] for r in ranking for k in r["ranks"]} <= {"dense", "bm25"}
    assert saved[0]["ranking"] == rows[saved[0]["qid"]]["ranking"]
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["models"]["llm"] == "scripted-llm"


def test_answers_with_a_strategy_record_it_and_need_answers(dataset_dir, tmp_path):
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "hybrid", answers=True, strategy="stuff",
                                     answer_config=parse_config("hybrid")), llm=ScriptedLLM(scripted_answers))
    assert result.answers.config == "hybrid (stuff)"
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["strategy"] == "stuff"
    rows = result.answers.per_query
    assert all("refusal_reason" in r and "answer_check" in r and "context_tokens" in r for r in rows)
    with pytest.raises(ConfigError, match="--strategy needs --answers"):
        evaluate(tmp_path, spec(dataset_dir, tmp_path, strategy="refine"))


def test_judge_scores_answered_queries_and_counts_unparsable_replies(dataset_dir, tmp_path):
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "bm25", answers=True, judge=True),
                      llm=ScriptedLLM(scripted_answers))
    agg = result.answers.aggregate
    assert agg["faithfulness"] == pytest.approx(0.5)
    assert agg["answer_relevance"] is None
    assert result.answers.judge_failures == 5  # one unparsable relevance reply per answered query
    with pytest.raises(ConfigError, match="--judge needs --answers"):
        evaluate(tmp_path, spec(dataset_dir, tmp_path, judge=True))


def test_locator_realigns_normalised_chunks_and_falls_back_to_text(dataset_dir):
    locator = ChunkLocator(load_dataset(str(dataset_dir)))
    text = DOCS["d1"]
    gold = [GoldAnswer("500 mg", text.index("500 mg"), "d1")]
    exact = Chunk("c", "kb", "x", "d1.txt", text, 0, len(text))
    assert locator.locate("d1.txt", 0, len(text), text)[1] == "exact" and locator.contains(exact, gold)
    # a parser that turned the blank line into a space: offsets shift, the words are found again
    flat = " ".join(text.split())
    span, how = locator.locate("d1.txt", 0, len(flat), flat)
    assert how == "realigned" and (span.start, span.end) == (0, len(text))
    assert locator.contains(Chunk("c", "kb", "x", "d1.txt", flat, 0, len(flat)), gold)
    tail = "The adult dose is 500 mg"
    span, how = locator.locate("d1.txt", 3, 3 + len(tail), tail)
    assert how == "realigned" and span.start == text.index(tail)
    # the same answer text elsewhere in the document does not count once offsets are known
    decoy = "Aspirin: aspirin reduces fever and pain."
    assert not locator.contains(Chunk("c", "kb", "x", "d1.txt", decoy, 0, len(decoy)), gold)
    # text that cannot be found in the corpus: matched by normalised text containment
    changed = "THE ADULT DOSE — 500 mg"
    assert locator.locate("d1.txt", 60, 80, changed)[1] == "text"
    assert locator.contains(Chunk("c", "kb", "x", "d1.txt", changed, 60, 80), gold)
    assert not locator.contains(Chunk("c", "kb", "x", "d2.txt", "dose 500 mg", 0, 11), gold)  # another document


def test_cli_eval_prints_tables_and_reuses_the_knowledge_base(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    monkeypatch.setenv("RAG_RERANK_MODEL", "none")
    args = ["eval", str(dataset_dir), "--compare", "bm25,hybrid", "--chunk-size", "80", "--chunk-overlap", "0",
            "--out", str(tmp_path / "cli-out"), "-q"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "ingest eval-tiny-recursive-80-0: 5 files embedded" in first.stdout
    assert "## Retrieval, answer-chunk level" in first.stdout and "| bm25 |" in first.stdout
    assert (tmp_path / "cli-out" / "report.md").is_file()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "0 files embedded, 5 unchanged" in second.stdout and "nothing was embedded" in second.stdout
    fresh = CliRunner().invoke(app, args + ["--limit", "2", "--skip", "2"])
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((tmp_path / "cli-out" / "settings.json").read_text())["sample"]["skip"] == 2
    bad = CliRunner().invoke(app, ["eval", str(dataset_dir), "--compare", "hybrid,fancy"])
    assert bad.exit_code == 2 and "unknown evaluation config 'fancy'" in bad.output
    assert "Traceback" not in bad.output
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "neither a shipped dataset" in missing.output


# -- any BEIR folder: multi-positive graded qrels, answers without doc_id, skipped queries ------

MULTI_QUERIES = [
    {"_id": "m1", "text": "aspirin dose"}, {"_id": "m2", "text": "Which light does chlorophyll absorb?"},
    {"_id": "m3", "text": "penguins Antarctica volcano Sicily"}, {"_id": "empty", "text": ""},
    {"_id": "dup", "text": "Eiffel Tower"}, {"_id": "dup", "text": "Paris tower"},
    {"_id": "lost", "text": "Mount Etna"},
]
# m1: two relevant documents of different grades (d1 holds the answer, d4 is a weaker positive)
MULTI_QRELS = ("query-id\tcorpus-id\tscore\nm1\td1\t2\nm1\td4\t1\nm2\td4\t1\nm2\td2\t0\n"
               "m3\td2\t1\nm3\td5\t3\nempty\td1\t1\ndup\td3\t1\nlost\tgone\t1\n")
MULTI_ANSWERS = [
    {"_id": "m1", "answers": ["500 mg"]},  # no doc_id: found in d1 only
    {"_id": "m2", "answers": ["blue and red light"]},  # single relevant document: inferred
    {"_id": "m3", "answers": ["Antarctica"], "all_of": [["Antarctica", "南极"], ["Etna", "Mount Etna"]]},
]


def write_multi_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(lines({"_id": k, "text": v} for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text(lines(MULTI_QUERIES))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(MULTI_QRELS)
    (root / "answers.jsonl").write_text(lines(MULTI_ANSWERS))
    return root


def test_beir_folder_with_graded_multi_positive_qrels_and_unevaluable_queries(tmp_path):
    from eval.metrics import ndcg_at_k

    root = write_multi_dataset(tmp_path / "multi")
    result = evaluate(tmp_path, spec(root, tmp_path, "bm25,hybrid"))
    assert result.qids == ["m1", "m2", "m3"]
    assert result.dataset.skipped_queries == {"empty": "empty text", "dup": "duplicate id with different texts",
                                              "lost": "its relevant passages are missing from the corpus"}
    bm25 = result.results[0]
    grades = {"m1": {"d1": 2, "d4": 1}, "m2": {"d4": 1}, "m3": {"d2": 1, "d5": 3}}
    graded_differs = False
    for row in bm25.per_query:
        docs = list(dict.fromkeys(h["doc_id"] for h in row["retrieved"]))
        judged = grades[row["qid"]]
        expected = ndcg_at_k([judged.get(d, 0) for d in docs], len(judged), 10, list(judged.values()))
        assert row["doc_metrics"]["ndcg@10"] == pytest.approx(expected)
        binary = ndcg_at_k([d in judged for d in docs], len(judged), 10)
        graded_differs = graded_differs or abs(binary - expected) > 1e-6
    assert graded_differs, "the dataset must tell graded nDCG from binary nDCG"
    # answers without doc_id: the answer chunk of m1 is the chunk of d1 holding "500 mg"
    m1 = next(r for r in bm25.per_query if r["qid"] == "m1")
    assert m1["answer_chunk_ranks"] and all(
        m1["retrieved"][i - 1]["doc_id"] == "d1" for i in m1["answer_chunk_ranks"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "3 queries skipped (not evaluable)" in report and "dup, empty, lost" in report
    assert "judgements from qrels/test.tsv" in report
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert {r["qid"] for r in skipped if r["kind"] == "query"} == {"empty", "dup", "lost"}
    saved = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert saved["dataset"]["skipped_queries"]["empty text"] == 1 and saved["dataset"]["evaluable"] == 3
    assert saved["dataset"]["qrels_file"].endswith("qrels/test.tsv")
    heading = next(h for h in result.tables if h.startswith("Paired differences to bm25"))
    table = result.tables[heading]
    assert "| hybrid |" in table and "mrr@10 95% CI" in table and "ndcg@10 W/T/L" in table


def test_comparison_of_a_config_with_itself_is_a_zero_interval(dataset_dir, tmp_path):
    from eval.runner import comparison_rows

    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "bm25"))
    (row,) = comparison_rows([result.results[0], result.results[0]], "answer", resamples=200)
    assert row["Δ mrr@10"] == 0.0 and row["mrr@10 95% CI"] == "[+0.000, +0.000]"
    assert row["mrr@10 W/T/L"] == "0/6/0" and row["ndcg@10 W/T/L"] == "0/6/0" and row["n"] == 6


def test_split_halves_partition_the_evaluable_queries(dataset_dir, tmp_path):
    dev = evaluate(tmp_path, spec(dataset_dir, tmp_path, split="dev", seed=2)).qids
    test = evaluate(tmp_path, spec(dataset_dir, tmp_path, split="test", seed=2)).qids
    assert not set(dev) & set(test) and sorted(dev + test) == [f"q{i}" for i in range(1, 7)]
    assert evaluate(tmp_path, spec(dataset_dir, tmp_path, split="test", seed=2)).qids == test
    first = evaluate(tmp_path, spec(dataset_dir, tmp_path, split="test", seed=2, limit=1)).qids
    fresh = evaluate(tmp_path, spec(dataset_dir, tmp_path, split="test", seed=2, limit=1, skip=1)).qids
    assert len(fresh) == 1 and set(fresh) <= set(test) and fresh != first
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["sample"]["skip"] == 1
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["sample"]["split"] == "test"
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate(tmp_path, spec(dataset_dir, tmp_path, split="train"))


def multi_answers(messages) -> str:
    content = messages[-1]["content"]
    if "Question: aspirin dose" in content:
        return "Take 500 MG."
    if "chlorophyll" in content:
        return "It absorbs green light."
    return "Penguins live in 南极; the volcano is Mount Etna."


def test_answers_report_accuracy_with_all_of_and_answers_without_doc_id(tmp_path):
    root = write_multi_dataset(tmp_path / "multi")
    result = evaluate(tmp_path, spec(root, tmp_path, "hybrid", answers=True, answer_config=parse_config("hybrid")),
                      llm=ScriptedLLM(multi_answers))
    rows = {r["qid"]: r for r in result.answers.per_query}
    assert {q: r["accuracy"] for q, r in rows.items()} == {"m1": 1.0, "m2": 0.0, "m3": 1.0}
    assert rows["m1"]["em"] == 0.0 and rows["m1"]["contains"] == 1.0
    assert result.answers.aggregate["accuracy"] == pytest.approx(2 / 3)
    assert "accuracy" in result.tables["Answers"]


def test_cli_eval_split_and_qrels_split(tmp_path, monkeypatch):
    root = write_multi_dataset(tmp_path / "multi")
    (root / "qrels" / "dev.tsv").write_text("m2\td4\t1\n")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    monkeypatch.setenv("RAG_RERANK_MODEL", "none")
    base = ["eval", str(root), "--chunk-size", "80", "--chunk-overlap", "0", "-q"]
    out = CliRunner().invoke(app, [*base, "--compare", "bm25,dense", "--split", "all", "--out", str(tmp_path / "a")])
    assert out.exit_code == 0, out.output
    assert "## Paired differences to bm25" in out.stdout and "| dense |" in out.stdout
    assert "3 queries skipped" in (tmp_path / "a" / "report.md").read_text()
    dev = CliRunner().invoke(app, [*base, "--compare", "bm25", "--qrels-split", "dev", "--out", str(tmp_path / "b")])
    assert dev.exit_code == 0, dev.output
    assert json.loads((tmp_path / "b" / "settings.json").read_text())["sample"]["qids"] == ["m2"]
    bad = CliRunner().invoke(app, [*base, "--qrels-split", "train"])
    assert bad.exit_code != 0 and "qrels/train.tsv" in bad.output and "Traceback" not in bad.output


def test_a_passage_removed_from_the_corpus_leaves_the_knowledge_base(dataset_dir, tmp_path):
    first = evaluate(tmp_path, spec(dataset_dir, tmp_path))
    assert first.ingest.count("indexed") == 5
    corpus = dataset_dir / "corpus.jsonl"
    corpus.write_text("".join(line + "\n" for line in corpus.read_text().splitlines() if '"d5"' not in line))
    second = evaluate(tmp_path, spec(dataset_dir, tmp_path))
    assert second.ingest.count("removed") == 1 and second.ingest.count("unchanged") == 4
    files = tmp_path / "data" / "eval" / "tiny" / "files"
    assert sorted(p.name for p in files.iterdir()) == ["d1.txt", "d2.txt", "d3.txt", "d4.txt"]
    assert second.dataset.skipped_queries == {"q5": "its relevant passages are missing from the corpus"}


def test_dataset_titles_reach_the_knowledge_base_and_the_prompt_while_files_hold_the_text(dataset_dir, tmp_path):
    corpus = dataset_dir / "corpus.jsonl"
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    corpus.write_text(lines({**r, "title": "Eiffel Tower" if r["_id"] == "d3" else ""} for r in rows))
    llm = ScriptedLLM(lambda messages: "It was completed in 1889 [1].")
    result = evaluate(tmp_path, spec(dataset_dir, tmp_path, "hybrid", answers=True,
                                     answer_config=parse_config("hybrid")), llm=llm)
    svc = make_services(tmp_path)
    try:
        titles = {d.source: d.title for d in svc.catalog.list_docs(result.kb)}
    finally:
        svc.close()
    assert titles["d3.txt"] == "Eiffel Tower" and titles["d1.txt"] == "d1"  # no title: the file name's stem
    assert (tmp_path / "data" / "eval" / "tiny" / "files" / "d3.txt").read_text() == DOCS["d3"]
    asked = [c["messages"][-1]["content"] for c in llm.calls if "Eiffel" in c["messages"][-1]["content"]]
    assert any("] Eiffel Tower\n" in prompt for prompt in asked)
    rows = {r["qid"]: r for r in result.answers.per_query}
    assert rows["q3"]["accuracy"] == 1.0  # the gold span is still found at its offsets
