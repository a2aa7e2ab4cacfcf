"""`rag eval DATASET --robustness`: sample the questions, run every controlled context
(`eval.robustness`) and write the report: `report.md` (tables per ability), `report.png`
(accuracy and refusal rate per test), `noise.png` (accuracy per noise ratio, a line chart),
`settings.json` and `per_query.jsonl` (one row per answer)."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.datasets import Dataset, load_dataset, sample_record, split_ids
from eval.metrics import latency_summary, paired_bootstrap
from eval.report import markdown_table, write_jsonl, write_report
from eval.robustness import RATIOS, TESTS, RobustnessRun, passage_tokens, run_trials
from rag.errors import ConfigError
from rag.factory import Services
from rag.pipeline import Pipeline

log = logging.getLogger(__name__)

PER_QUERY_FILE = "per_query.jsonl"
NOISE_PNG = "noise.png"
DEFAULT_K = 5
DEFAULT_PASSAGE_TOKENS = 230  # about an 800-character English chunk, the default chunk size


@dataclass
class RobustnessSpec:
    dataset: str
    limit: int | None = None
    seed: int = 0
    skip: int = 0  # see EvalSpec.skip
    split: str = "all"
    qrels_split: str | None = None
    k: int = DEFAULT_K
    ratios: tuple[float, ...] = RATIOS
    tests: tuple[str, ...] = TESTS  # which abilities to measure
    passage_tokens: int = DEFAULT_PASSAGE_TOKENS
    out_dir: Path | None = None
    resamples: int = 10_000


@dataclass
class RobustnessResult:
    dataset: Dataset
    qids: list[str]
    run: RobustnessRun
    out_dir: Path
    report_path: Path
    tables: dict[str, str] = field(default_factory=dict)


def check_spec(spec: RobustnessSpec, settings) -> None:
    if not 1 <= spec.k <= settings.context_top_n:
        raise ConfigError(f"--k must be from 1 to context_top_n ({settings.context_top_n}, RAG_CONTEXT_TOP_N), "
                          f"got {spec.k}", field="k")
    unknown = [t for t in spec.tests if t not in TESTS]
    if unknown or not spec.tests:
        raise ConfigError(f"unknown robustness tests {unknown}; choose from {', '.join(TESTS)}", field="tests")
    if not spec.ratios or any(not 0.0 <= r < 1.0 for r in spec.ratios):
        raise ConfigError(f"noise ratios must lie in [0, 1), got {list(spec.ratios)}", field="ratios")
    if spec.passage_tokens < 16:
        raise ConfigError(f"--passage-tokens must be >= 16, got {spec.passage_tokens}", field="passage_tokens")
    split_ids([], spec.split)


def run_robustness(services: Services, spec: RobustnessSpec, *, show_progress: bool = True,
                   pipeline: Pipeline | None = None) -> RobustnessResult:
    """Load the dataset (every passage text: noise comes from the whole corpus), sample the
    questions with gold answers, answer every controlled context and write the report."""
    check_spec(spec, services.settings)
    dataset = load_dataset(spec.dataset, qrels_split=spec.qrels_split, keep_text="all")
    if not dataset.answer_keys:
        raise ConfigError(f"dataset {dataset.name} has no answers.jsonl: --robustness needs gold answers",
                          field="robustness")
    qids = [q for q in dataset.sample(spec.limit, spec.seed, spec.split, spec.skip) if q in dataset.answer_keys]
    if not qids:
        raise ConfigError(f"dataset {dataset.name} has no question with gold answers in split {spec.split!r}",
                          field="dataset")
    pipeline = pipeline if pipeline is not None else services.pipeline
    tokens = passage_tokens(services.settings, spec.k, spec.passage_tokens)
    from tqdm import tqdm

    with tqdm(desc="robustness", unit="answer", file=sys.stderr, disable=not show_progress, leave=False) as bar:
        def total(n: int) -> None:
            bar.total = n
            bar.refresh()

        run = run_trials(pipeline, dataset, qids, k=spec.k, ratios=spec.ratios, seed=spec.seed,
                         window_tokens=tokens, progress=bar.update, total=total, tests=spec.tests)
    out_dir = Path(spec.out_dir) if spec.out_dir else Path("runs") / (
        f"robustness-{dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = RobustnessResult(dataset, qids, run, out_dir, out_dir / "report.md")
    _write(services, spec, result)
    return result


# -- tables ----------------------------------------------------------------------------------


def _mean(values) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _p50(rows) -> float:
    return latency_summary([r["timings"] for r in rows]).get("total", {}).get("p50", 0.0) if rows else 0.0


def _of(rows: Sequence[dict], test: str, ratio: float | None = None) -> list[dict]:
    return [r for r in rows if r["test"] == test and (ratio is None or r["ratio"] == ratio)]


def summary_rows(rows: Sequence[dict], ratios: Sequence[float]) -> list[dict[str, Any]]:
    """One row per test (per ratio for noise): n, accuracy, F1, refusal rate, p50 seconds."""
    groups = [(f"noise {r:.1f}", _of(rows, "noise", r)) for r in ratios]
    groups += [("negative rejection", _of(rows, "rejection")), ("integration", _of(rows, "integration")),
               ("counterfactual", _of(rows, "counterfactual"))]
    return [{"name": name, "n": len(g), "accuracy": _mean(r["accuracy"] for r in g),
             "f1": _mean(r["f1"] for r in g), "refusal_rate": _mean(r["refused"] for r in g), "p50 s": _p50(g)}
            for name, g in groups if g]


def noise_rows(rows: Sequence[dict], ratios: Sequence[float], resamples: int, seed: int) -> list[dict[str, Any]]:
    """Per ratio: the context actually built, accuracy, and its paired difference to ratio 0
    (bootstrap 95% interval over the questions answered at both)."""
    base = {r["qid"]: r["accuracy"] for r in _of(rows, "noise", ratios[0])}
    out = []
    for ratio in ratios:
        group = _of(rows, "noise", ratio)
        if not group:
            continue
        cited = [c for r in group for c in r["cited"]]
        common = [r for r in group if r["qid"] in base]
        stats = paired_bootstrap([base[r["qid"]] for r in common], [r["accuracy"] for r in common],
                                 resamples=resamples, seed=seed)
        out.append({"name": f"{ratio:.1f}", "n": len(group), "positives": _mean(r["n_positive"] for r in group),
                    "noise": _mean(r["n_noise"] for r in group), "noise share": _mean(r["noise_share"] for r in group),
                    "accuracy": _mean(r["accuracy"] for r in group), "f1": _mean(r["f1"] for r in group),
                    "refusal_rate": _mean(r["refused"] for r in group),
                    "cited noise": _mean(c["kind"] == "noise" for c in cited),
                    f"Δ acc vs {ratios[0]:.1f}": stats["mean"],
                    "95% CI": f"[{stats['low']:+.3f}, {stats['high']:+.3f}]", "p50 s": _p50(group)})
    return out


def rejection_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    group = _of(rows, "rejection")
    if not group:
        return []
    answered = [r for r in group if not r["refused"]]
    reasons = Counter(r["refusal_reason"] for r in group if r["refused"])
    cited = [c for r in answered for c in r["cited"]]
    return [{"name": "noise only", "n": len(group), "refusal_rate": _mean(r["refused"] for r in group),
             "model refused": reasons["model_refused"] / len(group),
             "verifier refused": reasons["unsupported_answer"] / len(group),
             "check refused": reasons["off_topic_answer"] / len(group),
             "sources off topic": reasons["off_topic_sources"] / len(group),
             "empty": reasons["empty_model_answer"] / len(group),
             "answered": len(answered) / len(group),
             "answered with a model citation": _mean(any(c["origin"] == "model" for c in r["cited"]) for r in answered),
             "citations per answer": _mean(len(r["cited"]) for r in answered),
             "cited supported": _mean(bool(c["supported"]) for c in cited),
             "accuracy": _mean(r["accuracy"] for r in group)}]


def integration_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    group = _of(rows, "integration")
    if not group:
        return []
    return [{"name": "partial evidence", "n": len(group), "passages": _mean(r["n_positive"] for r in group),
             "accuracy": _mean(r["accuracy"] for r in group), "parts found": _mean(r["parts_found"] for r in group),
             "refusal_rate": _mean(r["refused"] for r in group)}]


def counterfactual_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    group = _of(rows, "counterfactual")
    if not group:
        return []
    return [{"name": "gold + counterfactual", "n": len(group), "accuracy": _mean(r["accuracy"] for r in group),
             "misled": _mean(r["misled"] for r in group),
             "noticed conflict": _mean(r["noticed_conflict"] for r in group),
             "refusal_rate": _mean(r["refused"] for r in group)}]


def latency_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    out = []
    for test in ("noise", "rejection", "integration", "counterfactual"):
        group = _of(rows, test)
        if not group:
            continue
        row: dict[str, Any] = {"name": test, "n": len(group)}
        for stage, s in latency_summary([r["timings"] for r in group]).items():
            row[f"{stage} p50 s"], row[f"{stage} p95 s"] = s["p50"], s["p95"]
        out.append(row)
    return out


# -- files -----------------------------------------------------------------------------------


def noise_chart(path: Path, title: str, table: Sequence[dict[str, Any]]) -> None:
    """Accuracy, F1 and refusal rate against the noise ratio (a line chart, PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    x = [float(r["name"]) for r in table]
    for column, style in (("accuracy", "o-"), ("f1", "s--"), ("refusal_rate", "^:")):
        values = [r.get(column) for r in table]
        if any(v is not None for v in values):
            ax.plot(x, [v if v is not None else float("nan") for v in values], style, label=column)
    ax.set_xlabel("noise ratio")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(x)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _write(services: Services, spec: RobustnessSpec, result: RobustnessResult) -> None:
    rows, run, dataset = result.run.rows, result.run, result.dataset
    main = summary_rows(rows, spec.ratios)
    noise = noise_rows(rows, spec.ratios, spec.resamples, spec.seed)
    tables = {"Summary": markdown_table(main)}
    sections: dict[str, str] = {}
    if noise:
        tables["Noise robustness"] = markdown_table(noise)
        result.out_dir.mkdir(parents=True, exist_ok=True)
        noise_chart(result.out_dir / NOISE_PNG, f"{dataset.name}: answers against noise (k={spec.k})", noise)
        sections["Noise robustness"] = f"{tables['Noise robustness']}\n\n![accuracy per noise ratio]({NOISE_PNG})"
    for heading, table in (("Negative rejection", rejection_rows(rows)), ("Information integration",
                           integration_rows(rows)), ("Counterfactual robustness", counterfactual_rows(rows))):
        body = markdown_table(table) if table else "_no question qualifies_"
        tables[heading] = body
        sections[heading] = body
    tables["Latency per answer"] = markdown_table(latency_rows(rows))
    sections["Latency per answer"] = tables["Latency per answer"]
    result.tables = tables
    sections["Notes"] = "\n".join(f"- {n}" for n in _notes(spec, result))
    title = f"{dataset.name}: robustness ({len(result.qids)} questions, k={spec.k})"
    write_report(result.out_dir, title, main, _settings(services, spec, result), extra_sections=sections,
                 chart_columns=["accuracy", "f1", "refusal_rate"])
    write_jsonl(result.out_dir / PER_QUERY_FILE, rows)


def _notes(spec: RobustnessSpec, result: RobustnessResult) -> list[str]:
    run, dataset = result.run, result.dataset
    origins = Counter(p["origin"] for r in run.rows for p in r["passages"] if p["kind"] == "noise")
    missing = sum(r["noise_missing"] for r in run.rows)
    notes = [f"sample: {len(result.qids)} questions with gold answers (of {len(dataset.evaluable())} evaluable; "
             f"split {spec.split}, seed {spec.seed}" + (f", the first {spec.skip} draws left out" if spec.skip else "")
             + f"); {len(run.rows)} answers",
             f"contexts: windows of whole sentences of at most {run.window_tokens} estimated tokens "
             f"({run.windows} windows over {len(dataset.corpus)} passages); noise passages used: "
             f"{origins['judged']} judged not relevant, {origins['bm25']} BM25 hard negatives"
             + (f"; {missing} noise passages wanted but not available" if missing else ""),
             "noise ratio r: round(r·k) noise windows plus min(positives, k − round(r·k)) positive windows; a "
             "question with one relevant passage gets 1 positive, so its context has 1 + round(r·k) passages "
             "(column 'noise share' is the share actually given)"]
    for test, reasons in sorted(run.skipped.items()):
        counts = Counter(reasons.values())
        notes.append(f"{test}: {len(reasons)} questions not tested ("
                     + "; ".join(f"{n} × {why}" for why, n in counts.most_common()) + ")")
    return notes


def _settings(services: Services, spec: RobustnessSpec, result: RobustnessResult) -> dict[str, Any]:
    dataset = result.dataset
    return {"settings": services.settings.public_dict(),
            "models": {"llm": getattr(services.llm, "name", None), "embedder": services.embedder.name},
            "dataset": {"name": dataset.name, "path": str(dataset.path), "documents": len(dataset.doc_ids),
                        "evaluable": len(dataset.qrels), "with_answers": len(dataset.answer_keys),
                        "qrels_file": str(dataset.qrels_file), "skipped_rows": dict(dataset.issues.counts)},
            "sample": sample_record(spec, result.qids),
            "robustness": {"k": spec.k, "ratios": list(spec.ratios), "passage_tokens": spec.passage_tokens,
                           "window_tokens": result.run.window_tokens, "windows": result.run.windows,
                           "bootstrap_resamples": spec.resamples,
                           "not_tested": {t: dict(sorted(q.items())) for t, q in result.run.skipped.items()}}}
