"""Shared pieces of the CLI tests: a data folder with the hash embedder and a copy of the example
documents (`env`, a fixture: import it into the test module), and `run(...)` through Typer's runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "docs"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    monkeypatch.delenv("RAG_DEFAULT_KB", raising=False)
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    return docs


def run(*args):
    return CliRunner().invoke(app, list(args))
