"""`rag ask`: answer a question from a knowledge base, with numbered, verified citations."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from cli.main import app, fail, handle_errors
from cli.output import echo, name, term_safe
from rag.errors import InvalidRequest, LLMError
from rag.factory import build_services
from rag.names import HYBRID, LISTS, MODES, STRATEGIES, STUFF
from rag.pipeline import Pipeline
from rag.retrieval import parse_filter
from rag.serialize import answer_to_dict
from rag.settings import load_settings

NO_GENERATE_HINT = "retrieval-only results are still available with --no-generate"


@app.command()
@handle_errors
def ask(
    question: str = typer.Argument(..., help="The question, in any language."),
    kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB", help="Knowledge base name (default: RAG_DEFAULT_KB, else 'default')."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer token by token as it is generated."),
    sources: bool = typer.Option(False, "--sources", help="Also print the text of every source given to the model."),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="Skip the cross-encoder reranker."),
    transform: list[str] = typer.Option([], "--transform", "-t", help="rewrite | multi_query | hyde | step_back | "
                                        "sub_question (repeatable; default from RAG_TRANSFORMS)."),
    filters: list[str] = typer.Option([], "--filter", "-f", help="source=a.pdf, doc_id=..., team=hr (a tag), "
                                      "mtime_from=2024-01-01, mtime_to=... (repeatable; all must match)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON (with --stream: one JSON "
                                 "event per line)."),
    no_generate: bool = typer.Option(False, "--no-generate", help="Retrieval only: print the ranked chunks."),
    top_k: int = typer.Option(None, "--top-k", help="Candidates per list and query variant (default: 30)."),
    limit: int = typer.Option(None, "--limit", help="Hits kept after fusion/reranking (default: 5)."),
    mode: str = typer.Option(HYBRID, "--mode", help=" | ".join(MODES) + "."),
    strategy: str = typer.Option(None, "--strategy", envvar="RAG_STRATEGY", help=" | ".join(STRATEGIES) +
                                 " (default: auto: stuff when the sources fit, else map_reduce)."),
    no_collection: bool = typer.Option(False, "--no-collection", help="Never answer from the catalog (questions "
                                       "such as 'how many documents are there?' go through retrieval)."),
    all_versions: bool = typer.Option(False, "--all-versions", help="Keep every version of a document family "
                                      "(default: the newest found, or the one the question names)."),
    history: Path = typer.Option(None, "--history", help="JSON file with earlier turns: "
                                 '[{"role": "user"|"assistant", "content": "..."}].'),
) -> None:
    """Answer a question from the documents of a knowledge base, citing them as [1], [2]."""
    flt = parse_filter(filters)
    turns = _read_history(history) if history else None
    services = build_services(load_settings())
    try:
        pipeline = services.pipeline
        kwargs: dict[str, Any] = dict(kb=kb or services.settings.default_kb, flt=flt, top_k=top_k, limit=limit,
                                      transforms=transform or None, rerank=False if no_rerank else None,
                                      history=turns, mode=mode, generate=not no_generate, strategy=strategy,
                                      collection_questions=False if no_collection else None,
                                      prefer_latest=False if all_versions else None)
        if stream and not no_generate:
            _stream(pipeline, question, kwargs, as_json, sources)
            return
        try:
            answer = pipeline.answer(question, **kwargs)
        except LLMError as exc:
            fail(f"{exc.message} ({NO_GENERATE_HINT})", 1)
        data = answer_to_dict(answer)
        if as_json:
            echo(json.dumps(data, ensure_ascii=False, indent=2))
        elif no_generate:
            _print_hits(data)
        else:
            echo(data["answer_with_citations"])
            _print_footer(data, sources)
    finally:
        services.close()


def _stream(pipeline: Pipeline, question: str, kwargs: dict[str, Any], as_json: bool, show_text: bool) -> None:
    kwargs = {k: v for k, v in kwargs.items() if k != "generate"}
    done: dict[str, Any] | None = None
    for event in pipeline.stream(question, **kwargs):
        if as_json:
            echo(json.dumps(event, ensure_ascii=False))
        elif event["type"] == "token":
            sys.stdout.write(term_safe(event["text"]))
            sys.stdout.flush()
        if event["type"] == "error":
            if not as_json:
                echo("")
            hint = f" ({NO_GENERATE_HINT})" if event["code"] == LLMError.code else ""
            fail(f"{event['message']}{hint}", 1)
        if event["type"] == "done":
            done = event["answer"]
    if done is not None and not as_json:
        echo("")
        if done["info"].get("refusal_reason") == "unsupported_answer":  # streamed, then found unsupported
            echo(done["answer"])
        _print_footer(done, show_text)


def _read_history(path: Path) -> list[dict]:
    try:
        turns = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read --history {path}: {exc}", field="history") from exc
    if not isinstance(turns, list):
        raise InvalidRequest(f"--history {path} must hold a JSON list of {{role, content}} turns", field="history")
    return turns


def _where(item: dict[str, Any]) -> str:
    parts = [name(item["document"])]
    if item.get("section"):
        parts.append(name(item["section"]))
    if item.get("page") is not None:
        parts.append(f"page {item['page']}")
    parts.append(f"chars {item['start']}-{item['end']}")
    return " · ".join(parts)


def _print_footer(data: dict[str, Any], show_text: bool) -> None:
    info = data["info"]
    if data["refused"]:
        reason = {"no_hits": "no matching chunks", "low_rerank_score": "best rerank score under refuse_min_score",
                  "model_refused": "the model found no answer in the sources",
                  "empty_model_answer": "the model returned an empty answer",
                  "unsupported_answer": "no source supports what the model wrote",
                  "off_topic_answer": "the answer does not address the question",
                  "off_topic_sources": "no retrieved source is about the question"}.get(info.get("refusal_reason", ""), "")
        detail = (info.get("answer_check") or {}).get("detail")
        echo(f"\n(refused: {reason}{f'; {detail}' if detail else ''})" if reason else "", err=True)
    by_source: dict[int, list[dict[str, Any]]] = {}
    for c in data["citations"]:
        by_source.setdefault(c["source_number"], []).append(c)
    shown = [s for s in data["sources"] if show_text or s.get("cited")]
    if shown:
        echo("\nSources:")
    for s in shown:
        cites = by_source.get(s["number"], [])
        checked = [c for c in cites if c["supported"] is not None]
        status = ""
        if checked:
            ok = sum(1 for c in checked if c["supported"])
            attributed = sum(1 for c in cites if c.get("origin") == "attributed")
            status = f"  [{ok}/{len(checked)} citation(s) verified" + (f", {attributed} attributed]" if attributed else "]")
        elif not cites:
            status = "  [not cited]"
        echo(f"  [{s['number']}] {_where(s)}{status}")
        if show_text:
            echo("      " + s["text"].replace("\n", "\n      "))
    unsupported = [c for c in data["citations"] if c["supported"] is False]
    for c in unsupported:
        echo(f"  unverified: \"{c['sentence']}\" -> [{c['source_number']}] (support {c['support']:.2f})")
    _print_status(data)


def _print_hits(data: dict[str, Any]) -> None:
    if data["refused"] and not data["hits"]:
        echo("no matching chunks")
    for i, h in enumerate(data["hits"], 1):
        rerank = f" rerank {h['rerank_score']:.3f}" if h["rerank_score"] is not None else ""
        found = ", ".join(f"{p['list']}:{p['variant']}#{p['rank']}" for p in h["provenance"])
        echo(f"[{i}] {_where(h)}  fused {h['score']:.4f}{rerank}  ({found})")
        text = " ".join(h["text"].split())
        echo(f"    {text[:300]}{'…' if len(text) > 300 else ''}")
    _print_status(data)


def _print_status(data: dict[str, Any]) -> None:
    info, t = data["info"], data["timings"]
    rerank = info.get("rerank", {})
    state = f"on ({rerank.get('model', '')})" if data["rerank_enabled"] else f"off ({rerank.get('reason', '')})"
    retrieval = sum(t.get(k, 0.0) for k in ("condense", "transform", "embed", *LISTS, "fusion", "fetch"))
    line = f"reranking: {state} · retrieval {retrieval * 1000:.0f} ms · rerank {t.get('rerank', 0) * 1000:.0f} ms"
    if t.get("generate"):
        line += f" · generation {t['generate']:.1f} s"
    if data["model"]:
        line += f" · model {data['model']}"
    strategy = info.get("strategy") or {}
    if strategy.get("name") not in (None, STUFF):
        line += f" · strategy {strategy['name']} ({strategy.get('llm_calls', 0)} LLM calls)"
    echo(line, err=True)
    for warning in info.get("warnings", []):
        echo(f"warning: {warning}", err=True)
