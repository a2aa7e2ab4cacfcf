"""`rag ask --help` shows its defaults (Rich used to swallow "[default: ...]" as markup, leaving
"Knowledge base name ."), and `rag docs` shows each document's tags, in the table and in --json."""

from __future__ import annotations

import json

import pytest

from tests.unit.cli_helpers import env, run  # noqa: F401 - env is a fixture


@pytest.mark.parametrize("command", ["ask", "ingest"])
def test_help_shows_the_defaults(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Knowledge base name (default: RAG_DEFAULT_KB, else 'default')" in result.output
    assert " ." not in result.output.replace("...", "")


def test_docs_lists_tags(env):  # noqa: F811
    assert run("ingest", str(env), "--tag", "team=support,lang=en").exit_code == 0
    table = run("docs")
    assert table.exit_code == 0, table.output
    header = table.output.splitlines()[0]
    assert header.split() == ["chunks", "bytes", "ingested", "at", "tags", "source"]
    rows = [line for line in table.output.splitlines()[1:] if "lang=en,team=support" in line]
    assert rows and len(rows) == len(json.loads(run("docs", "--json").output))
    assert all(row["tags"] == {"team": "support", "lang": "en"} for row in json.loads(run("docs", "--json").output))


def test_eval_help_shows_what_its_options_default_to(monkeypatch):
    """Rich markup ate "[default: …]" written in a help text, leaving "Output folder ."."""
    monkeypatch.setenv("COLUMNS", "200")
    result = run("eval", "--help")
    assert result.exit_code == 0, result.output
    assert "Output folder (default: runs/eval-<dataset>-<timestamp>)." in result.output
    assert "Output folder ." not in result.output
