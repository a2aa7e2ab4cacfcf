"""`rag eval`: ingest a dataset's corpus into its own knowledge base (cached and incremental),
run a reproducible query sample through the real pipeline for each ablation configuration,
score retrieval at document and answer-chunk level, optionally generate and score answers,
and write the report (Markdown, PNG chart, settings.json, per-query JSON Lines)."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.ablations import EVAL_DEPTH, ChunkLocator, ConfigResult, EvalConfig, score_config
from eval.answer_eval import AnswerResult, evaluate_answers
from eval.datasets import (SPLITS, CorpusFolder, Dataset, load_dataset, resolve_dataset_path, sample_record,
                           split_ids)
from eval.metrics import paired_bootstrap
from eval.report import markdown_table, write_jsonl, write_report
from ingest.runner import IngestReport
from ingest.service import build_ingestor
from rag.errors import ConfigError, EmbeddingMismatch, RagError
from rag.factory import Services
from rag.pipeline import Pipeline

log = logging.getLogger(__name__)

LEVELS = ("auto", "doc", "answer")
METRICS = ("hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10", "recall@5", "recall@10")
PER_QUERY_FILE = "per_query.jsonl"
ANSWERS_FILE = "answers.jsonl"
SKIPPED_FILE = "skipped.jsonl"
COMPARED = ("mrr@10", "ndcg@10")  # metrics of the paired comparison to the first configuration
LISTED_IN_NOTES = 20  # skipped query ids named in the report's notes (all are in skipped.jsonl)


@dataclass
class EvalSpec:
    dataset: str  # a shipped dataset name or a BEIR-layout folder
    configs: list[EvalConfig]
    limit: int | None = None
    seed: int = 0
    skip: int = 0  # leave out the ids a --limit of this many draws: a fresh sample of the same half
    answers: bool = False
    judge: bool = False
    answer_config: EvalConfig | None = None  # None: the pipeline's own defaults
    strategy: str | None = None  # --answers: the answer strategy (None: the `strategy` setting)
    out_dir: Path | None = None  # default runs/eval-<dataset>-<timestamp>
    kb_prefix: str = "eval"
    level: str = "auto"  # the level of the main table and chart: auto = answer-chunk when answers exist
    split: str = "all"  # all | dev | test: a fixed half of the evaluable queries (see eval.datasets.split_ids)
    qrels_split: str | None = None  # qrels/<name>.tsv; None: qrels.tsv, else qrels/test.tsv
    resamples: int = 10_000  # paired bootstrap resamples of the comparison to the first configuration


@dataclass
class EvalResult:
    dataset: Dataset
    kb: str
    qids: list[str]
    ingest: IngestReport
    results: list[ConfigResult]
    answers: AnswerResult | None
    out_dir: Path
    report_path: Path
    tables: dict[str, str] = field(default_factory=dict)  # heading -> Markdown table
    split: str = "all"


def eval_kb_name(prefix: str, dataset_name: str, settings) -> str:
    """`eval-<dataset>-<chunker>-<size>-<overlap>`, reduced to the characters a kb name allows."""
    name = f"{prefix}-{dataset_name}-{settings.chunker}-{settings.chunk_size}-{settings.chunk_overlap}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:64]


def corpus_folder(services: Services, dataset_name: str) -> Path:
    """`<data_dir>/eval/<dataset>/files`: the corpus written as one file per passage."""
    return services.data_dir / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_name) / "files"


def open_dataset(services: Services, name: str, *, qrels_split: str | None = None, keep_text: str = "judged",
                 progress: Callable[[int], None] | None = None) -> tuple[Dataset, CorpusFolder]:
    """Load a dataset (a shipped name or a BEIR folder), writing its passages as they stream into
    its corpus folder (`corpus_folder`): the files `prepare_kb` ingests. `progress(n)` counts
    passages written."""
    written = CorpusFolder(corpus_folder(services, resolve_dataset_path(name).name), progress)
    return load_dataset(name, qrels_split=qrels_split, keep_text=keep_text, on_passage=written.write), written


def prepare_kb(services: Services, dataset: Dataset, kb: str, progress_factory=None,
               written: CorpusFolder | None = None) -> IngestReport:
    """Ingest the corpus folder into `kb` with the configured chunker; unchanged files are not
    embedded again. `written` is the folder `load_dataset` streamed the passages into; without
    it the passages of `dataset.corpus` are written first. Each document gets its passage's
    dataset title (the file holds the text alone). Files of passages no longer in the
    corpus are deleted (and so pruned from the knowledge base). `progress_factory(n_files)`
    may return an ingest progress callback (closed afterwards); a file is one passage."""
    if written is None:
        written = CorpusFolder(corpus_folder(services, dataset.name))
        for doc in dataset.corpus.values():
            written.write(doc)
    folder = written.folder
    if written.prune():
        log.info("removed the files of passages no longer in %s", dataset.name)
    try:
        ingestor = build_ingestor(services, kb, titles=written.titles)
    except EmbeddingMismatch as exc:
        raise EmbeddingMismatch(f"{exc.message}. For an evaluation, use another --kb-prefix (or `rag drop --kb "
                                f"{kb}`) to build a separate knowledge base for this model", field="kb") from exc
    progress = progress_factory(len(written)) if progress_factory is not None else None
    ingestor.progress = progress
    try:
        with services.kbs.writing(kb):
            report = ingestor.ingest_folder(folder, prune=True)
    finally:
        if hasattr(progress, "close"):
            progress.close()
    log.info("%s", ingest_summary(report))
    return report


def ingest_summary(report: IngestReport) -> str:
    return (f"ingest {report.kb}: {report.count('indexed', 'updated')} files embedded, "
            f"{report.count('unchanged')} unchanged, {report.count('removed')} removed, "
            f"{len(report.skipped)} skipped; {report.chunks_added} chunks added in {report.seconds:.1f} s "
            f"(embedding {report.embed_seconds:.1f} s)")


def run_eval(services: Services, spec: EvalSpec, *, show_progress: bool = True, ingest_progress=None,
             pipeline: Pipeline | None = None) -> EvalResult:
    """Prepare the knowledge base, score every configuration on the sample, optionally
    generate and score answers, and write the report into `spec.out_dir`. `ingest_progress`
    is a factory `(n_files) -> progress callback` for the ingest step."""
    if spec.level not in LEVELS:
        raise ConfigError(f"unknown level {spec.level!r}; choose from {', '.join(LEVELS)}", field="level")
    if spec.judge and not spec.answers:
        raise ConfigError("--judge needs --answers (it judges the generated answers)", field="judge")
    if spec.strategy and not spec.answers:
        raise ConfigError("--strategy needs --answers (it is how the answers are generated)", field="strategy")
    split_ids([], spec.split)  # fail before any work on an unknown split
    passages = _count_lines(resolve_dataset_path(spec.dataset) / "corpus.jsonl")
    with ProgressBar(passages, "passages", show_progress, unit="passage") as bar:
        dataset, written = open_dataset(services, spec.dataset, qrels_split=spec.qrels_split, progress=bar.update)
    if spec.answers and not dataset.answer_keys:
        raise ConfigError(f"dataset {dataset.name} has no answers.jsonl: --answers cannot be scored", field="answers")
    main_level(spec.level, dataset)  # fail before any work when the level is not available
    qids = dataset.sample(spec.limit, spec.seed, spec.split, spec.skip)
    if not qids:
        raise ConfigError(f"dataset {dataset.name} has no evaluable query (a text and a passage judged relevant) in "
                          f"split {spec.split!r}; {len(dataset.skipped_queries)} queries skipped: "
                          f"{_reason_counts(dataset)}", field="dataset")
    kb = eval_kb_name(spec.kb_prefix, dataset.name, services.settings)
    ingest = prepare_kb(services, dataset, kb, progress_factory=ingest_progress, written=written)
    pipeline = pipeline if pipeline is not None else services.pipeline
    locator = ChunkLocator(dataset)

    def retrieve(question: str, config: EvalConfig):
        return pipeline.retrieve(question, kb, mode=config.mode, rerank=config.rerank,
                                 transforms=config.transforms, limit=EVAL_DEPTH, fusion=config.fusion)

    results = []
    for config in spec.configs:
        with ProgressBar(len(qids), config.name, show_progress) as bar:
            results.append(score_config(config, dataset, qids, retrieve, locator, progress=bar.update))
    answers = None
    if spec.answers:
        with ProgressBar(len(qids), "answers", show_progress) as bar:
            answers = evaluate_answers(pipeline, kb, dataset, qids, spec.answer_config, locator,
                                       judge_llm=services.llm if spec.judge else None, progress=bar.update,
                                       strategy=spec.strategy)
    out_dir = Path(spec.out_dir) if spec.out_dir else Path("runs") / (
        f"eval-{dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = EvalResult(dataset, kb, qids, ingest, results, answers, out_dir, out_dir / "report.md", split=spec.split)
    _write_outputs(services, spec, result)
    return result


# -- tables and files ------------------------------------------------------------------------


def main_level(spec_level: str, dataset: Dataset) -> str:
    if spec_level == "auto":
        return "answer" if dataset.answers else "doc"
    if spec_level == "answer" and not dataset.answers:
        raise ConfigError(f"dataset {dataset.name} has no answers: answer-chunk level is not available", field="level")
    return spec_level


def rerank_state(result: ConfigResult) -> str:
    if not result.config.rerank:
        return "-"
    return "on" if result.rerank_enabled else "OFF (no reranker model)"


def retrieval_rows(results: Sequence[ConfigResult], level: str) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        metrics = (r.doc if level == "doc" else r.answer) or {"n": 0, "aggregate": {}}
        total = r.latency.get("total", {})
        rows.append({"name": r.config.name, "rerank": rerank_state(r), "n": metrics["n"],
                     **{m: metrics["aggregate"].get(m) for m in METRICS},
                     "p50 ms": total.get("p50", 0.0) * 1000, "p95 ms": total.get("p95", 0.0) * 1000})
    return rows


def per_query_scores(result: ConfigResult, level: str, metric: str) -> dict[str, float]:
    """qid -> the metric of this configuration at `level` (answer level: queries with spans)."""
    key = "doc_metrics" if level == "doc" else "answer_metrics"
    return {row["qid"]: row[key][metric] for row in result.per_query if row.get(key) is not None}


def comparison_rows(results: Sequence[ConfigResult], level: str, resamples: int = 10_000,
                    seed: int = 0) -> list[dict[str, Any]]:
    """For each configuration after the first: its mean difference to the first on MRR@10 and
    nDCG@10 over the same queries, the paired bootstrap 95% interval of that difference, and
    wins/ties/losses per query (see `eval.metrics.paired_bootstrap`)."""
    rows = []
    base = results[0]
    for other in results[1:]:
        row: dict[str, Any] = {"name": other.config.name}
        for metric in COMPARED:
            a, b = per_query_scores(base, level, metric), per_query_scores(other, level, metric)
            common = sorted(a.keys() & b.keys())
            stats = paired_bootstrap([a[q] for q in common], [b[q] for q in common], resamples=resamples, seed=seed)
            row["n"] = stats["n"]
            row[f"Δ {metric}"] = stats["mean"]
            row[f"{metric} 95% CI"] = f"[{stats['low']:+.3f}, {stats['high']:+.3f}]"
            row[f"{metric} W/T/L"] = f"{stats['wins']}/{stats['ties']}/{stats['losses']}"
        rows.append(row)
    return rows


def skipped_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """Every skipped query (with its reason), query scored at document level only, and
    skipped file row, as JSON Lines records."""
    rows: list[dict[str, Any]] = [{"kind": "query", "qid": q, "reason": r}
                                  for q, r in sorted(dataset.skipped_queries.items())]
    rows += [{"kind": "document_level_only", "qid": q,
              "reason": "no gold answer occurs in the text of a relevant passage"} for q in dataset.doc_level_only]
    rows += [{"kind": "row", "reason": message} for message in dataset.issues.rows]
    return rows


def _reason_counts(dataset: Dataset) -> str:
    counts = Counter(dataset.skipped_queries.values())
    return ", ".join(f"{n} {reason}" for reason, n in counts.most_common()) or "none"


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return "-"
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def latency_rows(results: Sequence[ConfigResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        row: dict[str, Any] = {"name": r.config.name}
        for stage, summary in r.latency.items():
            if summary["p95"] <= 0.0:  # a stage this configuration never ran
                continue
            row[f"{stage} p50 ms"] = summary["p50"] * 1000
            row[f"{stage} p95 ms"] = summary["p95"] * 1000
        rows.append(row)
    return rows


def _write_outputs(services: Services, spec: EvalSpec, result: EvalResult) -> None:
    dataset, level = result.dataset, main_level(spec.level, result.dataset)
    level_name = {"doc": "document level", "answer": "answer-chunk level"}
    main_rows = retrieval_rows(result.results, level)
    tables = {f"Retrieval, {level_name[level]}": markdown_table(main_rows)}
    for other in ("doc", "answer"):
        if other != level and (other == "doc" or dataset.answers):
            tables[f"Retrieval, {level_name[other]}"] = markdown_table(retrieval_rows(result.results, other))
    if len(result.results) > 1:
        first = result.results[0].config.name
        tables[f"Paired differences to {first}, {level_name[level]} (95% bootstrap interval, "
               f"{spec.resamples} resamples, seed {spec.seed})"] = markdown_table(
            comparison_rows(result.results, level, spec.resamples, spec.seed))
    tables["Latency per stage"] = markdown_table(latency_rows(result.results))
    if result.answers is not None:
        tables["Answers"] = markdown_table([result.answers.table_row()])
    result.tables = tables
    notes = _notes(result)
    extra = {heading: body for heading, body in list(tables.items())[1:]}
    extra["Notes"] = "\n".join(f"- {n}" for n in notes)
    title = f"{dataset.name}: retrieval, {level_name[level]} ({len(result.qids)} queries)"
    write_report(result.out_dir, title, main_rows, _settings_record(services, spec, result, level),
                 extra_sections=extra, chart_columns=list(METRICS))
    write_jsonl(result.out_dir / PER_QUERY_FILE, (row for r in result.results for row in r.per_query))
    if result.answers is not None:
        write_jsonl(result.out_dir / ANSWERS_FILE, result.answers.per_query)
    write_jsonl(result.out_dir / SKIPPED_FILE, skipped_rows(dataset))


def _notes(result: EvalResult) -> list[str]:
    dataset = result.dataset
    notes = [f"sample: {len(result.qids)} of {len(dataset.evaluable())} evaluable queries (split "
             f"{result.split}); knowledge base {result.kb}; {ingest_summary(result.ingest)}",
             f"judgements from {_relative(dataset.qrels_file, dataset.path)}; {len(dataset.doc_ids)} "
             f"passages; nDCG@10 at document level uses the graded judgements as gains",
             f"metrics over the top {EVAL_DEPTH} retrieved chunks; document level dedupes chunks to their "
             "documents; answer-chunk level counts a chunk that holds a gold answer span (without a doc_id: in any "
             "relevant passage)"]
    if dataset.skipped_queries:
        listed = ", ".join(sorted(dataset.skipped_queries)[:LISTED_IN_NOTES])
        more = len(dataset.skipped_queries) - LISTED_IN_NOTES
        notes.append(f"{len(dataset.skipped_queries)} queries skipped (not evaluable): {_reason_counts(dataset)}; "
                     f"ids: {listed}{f' and {more} more' if more > 0 else ''} (all in {SKIPPED_FILE})")
    if dataset.doc_level_only:
        in_sample = len(set(dataset.doc_level_only) & set(result.qids))
        notes.append(f"{len(dataset.doc_level_only)} queries with gold answers scored at document level only "
                     f"({in_sample} in the sample): no gold answer occurs in the text of a relevant passage")
    if dataset.issues.total:
        counts = "; ".join(f"{n} × {what}" for what, n in dataset.issues.counts.most_common())
        notes.append(f"file rows skipped or ignored: {dataset.issues.total} ({counts}; the first "
                     f"{len(dataset.issues.rows)} listed in {SKIPPED_FILE})")
    located = Counter()
    for r in result.results:
        located.update(r.offsets)
    if located:
        notes.append(f"retrieved chunks located in the corpus text: {located['exact']} by their own offsets, "
                     f"{located['realigned']} found again after the parser normalised whitespace, "
                     f"{located['text']} not located (their answer spans matched by normalised text), "
                     f"{located['unjudged']} from passages no query judges relevant (not checked)")
    for r in result.results:
        if r.config.rerank and not r.rerank_enabled:
            notes.append(f"{r.config.name}: reranking was requested but no reranker model is available, so it "
                         "ran WITHOUT reranking")
    return notes


def _settings_record(services: Services, spec: EvalSpec, result: EvalResult, level: str) -> dict[str, Any]:
    models: dict[str, Any] = {"embedder": services.embedder.name,
                              "embedder_resolution": services.embedder_resolution.reason}
    if any(c.rerank for c in spec.configs) or spec.answers:
        models["reranker"] = _reranker_name(services)
    if spec.answers:
        models["llm"] = getattr(services.llm, "name", None)
    return {"settings": services.settings.public_dict(), "models": models,
            "dataset": _dataset_record(result.dataset),
            "sample": sample_record(spec, result.qids),
            "bootstrap": {"resamples": spec.resamples, "seed": spec.seed, "metrics": list(COMPARED),
                          "baseline": spec.configs[0].name},
            "configs": [c.__dict__ for c in spec.configs], "level": level, "depth": EVAL_DEPTH,
            "answer_config": spec.answer_config.name if spec.answer_config else "pipeline defaults",
            "strategy": spec.strategy or services.settings.strategy,
            "judge": spec.judge, "kb": result.kb,
            "ingest": {k: v for k, v in result.ingest.as_dict().items() if k != "files"}}


def _dataset_record(dataset: Dataset) -> dict[str, Any]:
    return {"name": dataset.name, "path": str(dataset.path), "documents": len(dataset.doc_ids),
            "queries": len(dataset.queries.keys() | dataset.skipped_queries.keys()), "evaluable": len(dataset.qrels),
            "qrels_file": str(dataset.qrels_file), "with_answers": len(dataset.answer_keys),
            "skipped_queries": dict(Counter(dataset.skipped_queries.values())),
            "skipped_query_ids": sorted(dataset.skipped_queries)[:1000],
            "document_level_only": dataset.doc_level_only,
            "skipped_rows": dict(dataset.issues.counts)}


def _reranker_name(services: Services) -> str | None:
    try:
        reranker = services.reranker
    except RagError as exc:
        return f"unavailable: {exc.message}"
    return getattr(reranker, "name", None) if reranker is not None else None


class ProgressBar:
    """A tqdm progress bar on stderr (or a silent counter)."""

    def __init__(self, total: int | None, desc: str, enabled: bool, unit: str = "q") -> None:
        from tqdm import tqdm

        self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled,
                          dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self._tqdm.update(n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tqdm.close()
