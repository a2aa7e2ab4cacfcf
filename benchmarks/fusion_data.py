"""Datasets and cached ranked lists for the fusion benchmark (`benchmarks/fusion.py`).

- `subset`: a shipped dataset cut to N documents drawn with a seed, with their questions.
- `windows`: a multi-positive set with hard negatives built from a shipped dataset: every
  document is split into overlapping windows of W sentences (stride 1); a query's positives are
  the windows that hold one of its gold answer spans (by offsets), so most queries have several
  positives, and the other windows of the same document are topical hard negatives. This is
  the shape of news QA sets with many positive and many same-topic negative passages.
- `fetch`: ingest a dataset through the real eval path (`eval.runner.prepare_kb`, the configured
  chunker and embedder), then for every query take the dense list and the BM25 list to depth
  `DEPTH` once, with their scores, and cache them to JSON together with what the offline
  scorer needs: each retrieved chunk's document and whether it holds a gold answer."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from eval.ablations import ChunkLocator
from eval.datasets import Dataset, corpus_file_name, load_dataset, write_corpus_as_files
from eval.runner import eval_kb_name, prepare_kb
from ingest.service import build_ingestor
from rag.factory import build_services
from rag.settings import load_settings
from rag.text import split_sentences
from rag.types import ScoredId

log = logging.getLogger("bench.fusion")
DEPTH = 100


def _write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str]],
                answers: list[dict] | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in corpus)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in queries)
    with (folder / "qrels.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    if answers is not None:
        with (folder / "answers.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in answers)
    return folder


def densest_docs(base: Dataset, n_docs: int) -> list[str]:
    """The `n_docs` documents with the most judged questions per character of text (long English
    papers cost the CPU embedder minutes each; this keeps many questions per embedded chunk)."""
    asked: dict[str, int] = {}
    for rel in base.qrels.values():
        for d in rel:
            asked[d] = asked.get(d, 0) + 1
    ranked = sorted(base.corpus, key=lambda d: (-asked.get(d, 0) / max(1, len(base.corpus[d].text)), d))
    return sorted(ranked[:n_docs])


def subset(base: Dataset, n_docs: int, seed: int, folder: Path, densest: bool = False) -> Path:
    """`n_docs` documents of `base` (drawn with `seed`, or the `densest_docs`), the queries judged
    on them, their answers."""
    docs = (densest_docs(base, n_docs) if densest else
            sorted(random.Random(seed).sample(sorted(base.corpus), min(n_docs, len(base.corpus)))))
    keep = set(docs)
    qids = sorted(q for q, rel in base.qrels.items() if set(rel) & keep)
    corpus = [{"_id": d, "title": base.corpus[d].title, "text": base.corpus[d].text} for d in docs]
    queries = [{"_id": q, "text": base.queries[q]} for q in qids]
    qrels = [(q, d) for q in qids for d in base.qrels[q] if d in keep]
    answers = []
    for q in qids:
        for doc_id in {g.doc_id for g in base.answers.get(q, [])} & keep:
            golds = [g for g in base.answers[q] if g.doc_id == doc_id]
            answers.append({"_id": q, "doc_id": doc_id, "answers": [g.text for g in golds],
                            "answer_starts": [g.start for g in golds]})
    return _write_beir(folder, corpus, queries, qrels, answers if base.answers else None)


def windows(base: Dataset, n_docs: int | None, seed: int, width: int, folder: Path, densest: bool = False,
            with_answers: bool = False) -> Path:
    """Sentence windows of `width` sentences, stride 1, over `n_docs` documents of `base` (drawn
    with `seed`, or the `densest_docs`). `with_answers`: also an answers.jsonl, one row per
    positive window with the gold spans it holds (offsets in the window), for `rag eval --answers`."""
    ids = sorted(base.corpus)
    if n_docs is not None and n_docs < len(ids):
        if densest:
            ids = densest_docs(base, n_docs)
        else:
            ids = sorted(random.Random(seed).sample(ids, n_docs))
    corpus, spans_of = [], {}
    for doc_id in ids:
        text = base.corpus[doc_id].text
        sents = split_sentences(text)
        spans = []
        for i in range(max(1, len(sents) - width + 1)):
            start, end = sents[i][0], sents[min(i + width, len(sents)) - 1][1]
            wid = f"{doc_id}~w{i}"
            corpus.append({"_id": wid, "title": base.corpus[doc_id].title, "text": text[start:end]})
            spans.append((wid, start, end))
        spans_of[doc_id] = spans
    queries, qrels, answers = [], [], []
    for qid in sorted(base.queries):
        held: dict[str, list[tuple[str, int]]] = {}  # window -> (gold text, offset in the window)
        for gold in base.answers.get(qid, []):
            if gold.doc_id not in spans_of or gold.start is None:
                continue
            for wid, s, e in spans_of[gold.doc_id]:
                if s <= gold.start and gold.end <= e:
                    held.setdefault(wid, []).append((gold.text, gold.start - s))
        if held:
            queries.append({"_id": qid, "text": base.queries[qid]})
            qrels += [(qid, wid) for wid in held]
            answers += [{"_id": qid, "doc_id": wid, "answers": [t for t, _ in golds],
                         "answer_starts": [o for _, o in golds]} for wid, golds in held.items()]
    return _write_beir(folder, corpus, queries, qrels, answers if with_answers else None)


def build(name: str, data_dir: Path) -> Path:
    """The dataset folder for a benchmark dataset name (built once under `data_dir/datasets`)."""
    folder = data_dir / "datasets" / name
    if (folder / "qrels.tsv").is_file():
        return folder
    if name == "cmrc2018":
        return Path(load_dataset("cmrc2018").path)
    if name.startswith("covidqa-d") and name[9:].isdigit():  # covidqa-d25: the 25 papers most asked about
        return subset(load_dataset("covidqa"), int(name[9:]), 0, folder, densest=True)
    if name.startswith("covidqa-") and name[8:].isdigit():  # covidqa-40: 40 papers, seed 0
        return subset(load_dataset("covidqa"), int(name[8:]), 0, folder)
    if name.startswith(("cmrcwin-", "covidwin-")):  # cmrcwin-300: 3-sentence windows of 300 paragraphs
        base = load_dataset("cmrc2018" if name.startswith("cmrc") else "covidqa")
        return windows(base, int(name.split("-")[1]), 0, 3, folder, densest=name.startswith("covid"))
    return Path(load_dataset(name).path)


def first_docs(dataset: Dataset, n_docs: int) -> list[str]:
    """The first `n_docs` documents in file-name order (the order a folder ingest embeds them)."""
    return sorted(dataset.corpus, key=corpus_file_name)[:n_docs]


def prepare_part(services, dataset: Dataset, kb: str, doc_ids: list[str]):
    """`eval.runner.prepare_kb` for only `doc_ids` of the dataset: the same files folder and
    knowledge base as the whole dataset, other files removed from the folder first (so a
    smaller part reuses what a larger, interrupted ingest already embedded)."""
    folder = services.data_dir / "eval" / dataset.name / "files"
    keep = {corpus_file_name(d) for d in doc_ids}
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name not in keep:
                path.unlink()
    write_corpus_as_files(dataset, folder, doc_ids)
    ingestor = build_ingestor(services, kb)
    with services.kbs.writing(kb):
        return ingestor.ingest_folder(folder, prune=True)


def both_lists(kb, questions: Sequence[str], batch: int = 64) -> Iterator[tuple[list[ScoredId], list[ScoredId]]]:
    """(dense list, BM25 list) to depth DEPTH for each question, in order; the dense queries are
    embedded `batch` at a time."""
    for i in range(0, len(questions), batch):
        part = questions[i : i + batch]
        for question, vector in zip(part, kb.embed_queries(part)):
            yield kb.search_dense(vector, DEPTH), kb.search_bm25(question, DEPTH)


def scored_pairs(hits: Sequence[ScoredId]) -> list[list]:
    """A ranked list as the cache stores it: [[chunk id, score rounded to 6 places], ...]."""
    return [[h.chunk_id, round(h.score, 6)] for h in hits]


def fetch(name: str, data_dir: Path, out: Path, batch: int = 64, kb_prefix: str = "fusion",
          ingest: bool = True) -> dict[str, Any]:
    """Ingest the dataset (cached) and cache both lists to depth DEPTH for every judged query.
    `<shipped>-pN` (e.g. `cmrc2018-p463`) takes the first N documents of a shipped dataset; a
    folder path is a BEIR dataset. `kb_prefix` "eval" with `ingest` off reads the knowledge base
    `rag eval` built in `data_dir` as it is."""
    if out.is_file():
        return json.loads(out.read_text())
    base, _, part = name.partition("-p")
    settings = load_settings(data_dir=data_dir)
    services = build_services(settings)
    try:
        if part.isdigit():
            dataset = load_dataset(base)
            kb_name = eval_kb_name(kb_prefix, base, settings)
            keep = set(first_docs(dataset, int(part)))
            report = prepare_part(services, dataset, kb_name, sorted(keep))
            qids = [q for q in dataset.sample(None) if set(dataset.qrels[q]) & keep]
        else:
            dataset = load_dataset(str(build(name, data_dir)), keep_text="all" if ingest else "judged")
            kb_name = eval_kb_name(kb_prefix, dataset.name, settings)
            report = prepare_kb(services, dataset, kb_name) if ingest else None
            qids = dataset.sample(None)
        if report is not None:
            log.info("%s: %d chunks added in %.0f s", name, report.chunks_added, report.seconds)
        kb = services.kbs.open(kb_name)
        locator = ChunkLocator(dataset)
        rows: list[dict[str, Any]] = []
        chunk_doc: dict[str, str] = {}
        for qid, (dense, bm25) in zip(qids, both_lists(kb, [dataset.queries[q] for q in qids], batch)):
            ids = list(dict.fromkeys([h.chunk_id for h in dense] + [h.chunk_id for h in bm25]))
            chunks = kb.get_chunks(ids)
            gold = dataset.answers.get(qid)
            answer = [cid for cid in ids if gold and cid in chunks and locator.contains(chunks[cid], gold)]
            for cid in ids:
                if cid in chunks:
                    chunk_doc[cid] = locator.doc_id(chunks[cid].source)
            rows.append({"qid": qid, "question": dataset.queries[qid], "n_relevant": len(dataset.qrels[qid]),
                         "dense": scored_pairs(dense), "bm25": scored_pairs(bm25),
                         "relevant_docs": sorted(dataset.qrels[qid]), "answer_chunks": answer if gold else None})
            if len(rows) % batch == 0 or len(rows) == len(qids):
                log.info("%s: %d/%d queries fetched", name, len(rows), len(qids))
        result = {"dataset": name, "kb": kb_name, "chunks": kb.count(),
                  "embedder": services.embedder.name, "depth": DEPTH, "chunk_doc": chunk_doc, "queries": rows}
    finally:
        services.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":  # python -m benchmarks.fusion_data DATA_DIR NAME...
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = Path(sys.argv[1])
    for ds in sys.argv[2:]:
        fetch(ds, root, root / "lists" / f"{ds}.json")
