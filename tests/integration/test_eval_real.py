"""`rag eval` with the shipped models on small subsets of the shipped datasets.

- CMRC 2018 subset (40 Chinese paragraphs, their questions) with the bundled multilingual-e5-small:
  ~80 chunks to embed, well under a minute on 2 CPU cores (marked `ci` too);
- COVID-QA subset with `--answers` through the embedded LLM (slow: several seconds per answer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.ablations import parse_compare, parse_config
from eval.datasets import Dataset, load_dataset
from eval.runner import EvalSpec, run_eval
from rag.factory import build_services
from rag.settings import Settings


def write_subset(dataset: Dataset, doc_ids: list[str], root: Path) -> Path:
    """A BEIR folder holding `doc_ids` and the queries judged on them (answers included)."""
    root.mkdir(parents=True, exist_ok=True)
    wanted = set(doc_ids)
    qids = [q for q, rel in dataset.qrels.items() if set(rel) & wanted]

    def dump(name: str, rows) -> None:
        (root / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    dump("corpus.jsonl", ({"_id": d, "title": dataset.corpus[d].title, "text": dataset.corpus[d].text}
                          for d in doc_ids))
    dump("queries.jsonl", ({"_id": q, "text": dataset.queries[q]} for q in qids))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q in qids for d in dataset.qrels[q] if d in wanted), encoding="utf-8")
    dump("answers.jsonl", ({"_id": q, "doc_id": g[0].doc_id, "answers": [a.text for a in g],
                            "answer_starts": [a.start for a in g]}
                           for q in qids if (g := dataset.answers.get(q))))
    return root


def services_for(tmp_path: Path, **settings):
    return build_services(Settings(data_dir=tmp_path / "data", embed_model="auto", rerank_model="none", **settings))


@pytest.mark.slow
@pytest.mark.ci
def test_cmrc_subset_with_the_bundled_embedder(tmp_path):
    full = load_dataset("cmrc2018")
    root = write_subset(full, sorted(full.corpus)[:40], tmp_path / "cmrc-subset")
    spec = EvalSpec(str(root), parse_compare("bm25,dense,hybrid"), limit=60, seed=1, out_dir=tmp_path / "out",
                    level="doc")
    services = services_for(tmp_path)
    try:
        result = run_eval(services, spec, show_progress=False)
    finally:
        services.close()
    assert "e5" in result.ingest.model and result.ingest.chunks_added >= 40
    scores = {r.config.name: r.doc["aggregate"] for r in result.results}
    for name, agg in scores.items():
        assert agg["hit@10"] >= 0.8, (name, agg)  # 40 paragraphs: every mode finds most of them
    # fusion should not lose to the better single list by more than noise
    assert scores["hybrid"]["mrr@10"] >= max(scores["bm25"]["mrr@10"], scores["dense"]["mrr@10"]) - 0.05
    assert (tmp_path / "out" / "report.png").is_file()
    saved = json.loads((tmp_path / "out" / "settings.json").read_text(encoding="utf-8"))
    assert "e5" in saved["models"]["embedder"]

    services = services_for(tmp_path)
    try:
        again = run_eval(services, spec, show_progress=False)
    finally:
        services.close()
    assert again.ingest.chunks_added == 0 and again.ingest.count("unchanged") == 40


@pytest.mark.slow
def test_covidqa_subset_answers_with_the_embedded_llm(tmp_path):
    full = load_dataset("covidqa")
    shortest = sorted(full.corpus, key=lambda d: len(full.corpus[d].text))[:2]
    root = write_subset(full, shortest, tmp_path / "covid-subset")
    spec = EvalSpec(str(root), parse_compare("hybrid"), limit=4, seed=0, answers=True,
                    answer_config=parse_config("hybrid"), out_dir=tmp_path / "out")
    services = services_for(tmp_path, chunk_size=800, chunk_overlap=120)
    try:
        result = run_eval(services, spec, show_progress=False)
    finally:
        services.close()
    answers = result.answers
    in_subset = sum(1 for rel in full.qrels.values() if set(rel) & set(shortest))  # 3 questions on these two papers
    assert answers is not None and answers.n == min(4, in_subset)
    assert all(0.0 <= (v or 0.0) <= 1.0 for v in answers.aggregate.values())
    assert all(r["answer"].strip() for r in answers.per_query)
    # the retrieval over two short papers finds the answer chunk for most questions
    assert result.results[0].answer["aggregate"]["hit@10"] >= 0.5
    assert (tmp_path / "out" / "answers.jsonl").is_file()
