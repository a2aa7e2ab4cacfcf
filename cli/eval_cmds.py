"""`rag eval`: offline retrieval and answer evaluation on a shipped or local BEIR dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.ingest_cmds import _Progress
from cli.main import app, handle_errors
from cli.output import echo
from eval.ablations import parse_compare, parse_config, valid_config_help
from eval.datasets import SPLITS
from eval.robustness_report import DEFAULT_K, DEFAULT_PASSAGE_TOKENS, RobustnessSpec, run_robustness
from eval.multiturn import MultiturnSpec, run_multiturn
from eval.runner import LEVELS, EvalSpec, ProgressBar, ingest_summary, run_eval
from rag.factory import build_services
from rag.strategies import check_strategy
from rag.settings import load_settings

DEFAULT_COMPARE = "bm25,dense,hybrid,hybrid+rrf,hybrid+rerank"


@app.command("eval")
@handle_errors
def eval_cmd(
    dataset: str = typer.Argument(..., help="covidqa | cmrc2018 | a folder in BEIR layout (corpus.jsonl, "
                                            "queries.jsonl, qrels.tsv or qrels/<split>.tsv, optional "
                                            "answers.jsonl)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate a reproducible sample of N queries."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --split halves, the --limit sample and the "
                                               "bootstrap."),
    skip: int = typer.Option(0, "--skip", min=0, help="Leave out the queries that --limit SKIP draws (same "
                                                      "--seed and --split): a fresh sample of the same half, "
                                                      "disjoint from the first."),
    split: str = typer.Option("all", "--split", help=f"Query half: {' | '.join(SPLITS)}. dev and test are fixed, "
                                                     "disjoint halves of the evaluable queries for a --seed "
                                                     "(ordered by SHA-256 of '<seed>:<query id>')."),
    qrels_split: str = typer.Option(None, "--qrels-split", help="Read the judgements from qrels/<NAME>.tsv "
                                                                "(BEIR); default: qrels.tsv, else qrels/test.tsv."),
    compare: str = typer.Option(DEFAULT_COMPARE, "--compare",
                                help=f"Comma-separated configurations: {valid_config_help()}. Each one after "
                                     "the first is compared to the first: paired bootstrap 95% interval of the "
                                     "difference on MRR@10 and nDCG@10, wins/ties/losses per query."),
    answers: bool = typer.Option(False, "--answers", help="Also generate answers and score them (slow on CPU)."),
    answer_config: str = typer.Option(None, "--answer-config",
                                      help="Configuration used for --answers (default: the pipeline's defaults)."),
    judge: bool = typer.Option(False, "--judge", help="With --answers: LLM-judge faithfulness and relevance."),
    strategy: str = typer.Option(None, "--strategy", help="With --answers: the answer strategy (auto, stuff, "
                                                          "map_reduce, refine, map_rerank) (default: settings)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: runs/eval-<dataset>-<timestamp>)."),
    chunker: str = typer.Option(None, "--chunker", help="recursive | semantic | qa (default: settings)."),
    chunk_size: int = typer.Option(None, "--chunk-size", help="Characters per chunk (default: settings)."),
    chunk_overlap: int = typer.Option(None, "--chunk-overlap", help="Characters of overlap (default: settings)."),
    kb_prefix: str = typer.Option("eval", "--kb-prefix", help="Prefix of the evaluation knowledge base's name."),
    level: str = typer.Option("auto", "--level", help=f"Level of the main table: {' | '.join(LEVELS)} "
                                                      "(auto: answer-chunk level when the dataset has answers)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    robustness: bool = typer.Option(False, "--robustness", help="Instead of retrieval: answer from controlled "
                                    "contexts (noise ratios, noise only, partial evidence, counterfactual) with "
                                    "the real prompt, LLM, citation check and refusal logic (see docs/eval.md)."),
    k: int = typer.Option(DEFAULT_K, "--k", help="--robustness: passages per context."),
    ratios: str = typer.Option("0,0.2,0.4,0.6,0.8", "--ratios", help="--robustness: comma-separated noise ratios."),
    passage_tokens: int = typer.Option(DEFAULT_PASSAGE_TOKENS, "--passage-tokens",
                                       help="--robustness: estimated tokens per passage window (capped so k fit)."),
    tests: str = typer.Option("noise,rejection,integration,counterfactual", "--tests",
                              help="--robustness: comma-separated abilities to measure."),
    multiturn: bool = typer.Option(False, "--multiturn", help="Instead of single questions: conversations built "
                                   "from the dataset's questions (follow-ups with the subject replaced by a pronoun "
                                   "or dropped; see docs/eval.md), each follow-up retrieved (and with --answers "
                                   "answered) with its history and as the question asked in full. --limit counts "
                                   "conversations."),
    turns: int = typer.Option(3, "--turns", min=2, max=3, help="--multiturn: questions per conversation at most."),
) -> None:
    """Evaluate retrieval (hit@k, MRR@10, nDCG@10, recall@k) and optionally answers on a dataset.

    Queries that cannot be evaluated (empty text, no judgements, a duplicate id, judgements of
    missing passages) and unusable file rows are skipped, counted and listed in the report."""
    if robustness:
        _robustness(dataset, limit, seed, skip, split, qrels_split, k, ratios, passage_tokens, out, quiet, tests)
        return
    if multiturn:
        _multiturn(MultiturnSpec(dataset, limit, seed, split, turns, answers, kb_prefix, out, qrels_split), quiet)
        return
    spec = EvalSpec(dataset=dataset, configs=parse_compare(compare), limit=limit, seed=seed, skip=skip,
                    answers=answers, judge=judge, answer_config=parse_config(answer_config) if answer_config else None,
                    strategy=check_strategy(strategy, "auto") if strategy else None,
                    out_dir=out, kb_prefix=kb_prefix, level=level, split=split, qrels_split=qrels_split)
    settings = load_settings(chunker=chunker, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    services = build_services(settings)
    try:
        echo(f"embedding model: {services.embedder_resolution.reason}", err=True)
        if answers:
            echo("--answers: generating one answer per query; with the embedded CPU LLM this takes several "
                       "seconds per query", err=True)
        result = run_eval(services, spec, show_progress=not quiet,
                          ingest_progress=None if quiet else (lambda total: _Progress(total)))
    finally:
        services.close()
    echo(ingest_summary(result.ingest))
    if result.ingest.count("indexed", "updated") == 0:
        echo("knowledge base up to date: nothing was embedded")
    for heading, table in result.tables.items():
        echo(f"\n## {heading}\n\n{table}")
    echo(f"\nreport: {result.report_path}")


def _multiturn(spec: MultiturnSpec, quiet: bool) -> None:
    services = build_services(load_settings())
    try:
        if spec.answers:
            echo("--multiturn --answers: two answers per follow-up (with its history, and in full); with the embedded "
                 "CPU LLM this takes several seconds per answer", err=True)
        with ProgressBar(None, "follow-ups", not quiet) as bar:
            result = run_multiturn(services, spec, progress=bar.update)
    finally:
        services.close()
    for heading, table in result.tables.items():
        echo(f"\n## {heading}\n\n{table}")
    echo(f"\nreport: {result.out_dir / 'report.md'}")


def _robustness(dataset: str, limit, seed: int, skip: int, split: str, qrels_split, k: int, ratios: str,
                passage_tokens: int, out, quiet: bool, tests: str) -> None:
    try:
        values = tuple(float(r) for r in ratios.split(",") if r.strip())
    except ValueError:
        raise typer.BadParameter(f"--ratios must be comma-separated numbers, got {ratios!r}") from None
    spec = RobustnessSpec(dataset=dataset, limit=limit, seed=seed, skip=skip, split=split, qrels_split=qrels_split,
                          k=k, ratios=values, passage_tokens=passage_tokens, out_dir=out,
                          tests=tuple(t.strip() for t in tests.split(",") if t.strip()))
    services = build_services(load_settings())
    try:
        echo("--robustness: one answer per context (about 7 per question); with the embedded CPU LLM this "
                   "takes several seconds per answer", err=True)
        result = run_robustness(services, spec, show_progress=not quiet)
    finally:
        services.close()
    for heading, table in result.tables.items():
        echo(f"\n## {heading}\n\n{table}")
    echo(f"\nreport: {result.report_path}")
