import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from eval.prompts import JUDGE_PROMPTS, format_sources, parse_judge_output, render_prompt
from eval.report import markdown_table, read_jsonl, write_jsonl, write_report
from rag.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ROWS = [
    {"name": "dense", "hit@1": 0.5, "ndcg@10": 0.61234, "p95_s": 2.5},
    {"name": "hybrid+rerank", "hit@1": 0.75, "ndcg@10": 0.8, "p95_s": 4.0, "note": "a|b"},
]


def test_write_report_writes_markdown_png_and_settings(tmp_path):
    out = tmp_path / "run"
    md_path, png_path = write_report(
        out, "Retrieval on covidqa", ROWS, {"k": 10, "data": Path("/x"), "kinds": ("a", "b")},
        extra_sections={"Notes": "Sample of 50 queries."},
    )
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Retrieval on covidqa")
    assert "| name | hit@1 | ndcg@10 | p95_s | note |" in md
    assert "| dense | 0.500 | 0.612 | 2.500 | - |" in md
    assert "| hybrid+rerank | 0.750 | 0.800 | 4.000 | a\\|b |" in md
    assert "## Notes\n\nSample of 50 queries." in md
    assert "![Retrieval on covidqa](report.png)" in md
    data = png_path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert json.loads((out / "settings.json").read_text()) == {"data": "/x", "k": 10, "kinds": ["a", "b"]}


def test_chart_with_no_score_columns_is_still_a_png(tmp_path):
    _, png_path = write_report(tmp_path, "Latency", [{"name": "x", "p50_s": 3.2}], {})
    assert png_path.read_bytes().startswith(PNG_SIGNATURE)
    _, png_path = write_report(tmp_path / "e", "Empty", [], {})
    assert png_path.read_bytes().startswith(PNG_SIGNATURE)
    assert "_no results_" in (tmp_path / "e" / "report.md").read_text()


def test_markdown_table_alignment_and_ints():
    table = markdown_table([{"name": "a", "n": 50, "mrr": 1 / 3}])
    assert table.splitlines() == ["| name | n | mrr |", "|:---|---:|---:|", "| a | 50 | 0.333 |"]


@dataclass
class _Row:
    qid: str
    path: Path


def test_write_jsonl_round_trip(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "rows.jsonl", [{"q": "潜伏期", "v": 1.5}, _Row("q2", Path("a/b"))])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"q": "潜伏期", "v": 1.5}'
    assert read_jsonl(path) == [{"q": "潜伏期", "v": 1.5}, {"qid": "q2", "path": "a/b"}]


# -- judge prompts (eval/prompts), used by the runner --------------------------------------


def test_judge_prompts_render_with_their_placeholders():
    sources = format_sources(["Droplets spread it. ", "潜伏期为五天"])
    assert sources == "[1] Droplets spread it.\n\n[2] 潜伏期为五天"
    text = render_prompt("faithfulness", question="How?", answer="By droplets [1]. Costs $5.", sources=sources)
    assert "[2] 潜伏期为五天" in text and "Costs $5." in text and '"score"' in text and "$" not in text.replace("$5", "")
    relevance = render_prompt("answer_relevance", question="How?", answer="By droplets.")
    assert "How?" in relevance and "By droplets." in relevance
    assert set(JUDGE_PROMPTS) == {"faithfulness", "answer_relevance"}
    with pytest.raises(ConfigError, match="sources"):
        render_prompt("faithfulness", question="q", answer="a")
    with pytest.raises(ConfigError, match="unknown judge prompt"):
        render_prompt("nope")


def test_parse_judge_output():
    reply = '{"score": 0.5, "reason": "one claim {x} unsupported"}'
    assert parse_judge_output(reply) == (0.5, "one claim {x} unsupported")
    fenced = 'Here you go:\n```json\n{"score": 1, "reason": "ok"}\n```'
    assert parse_judge_output(fenced) == (1.0, "ok")
    assert parse_judge_output('{"note": 1} then {"score": 1.7}') == (1.0, "")  # clamped, first with a score
    with pytest.raises(ValueError):
        parse_judge_output("score: high")
