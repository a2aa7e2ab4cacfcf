"""`rag catalog copy --to postgresql://...`: a single host's SQLite catalog moves into PostgreSQL,
and the same commands then work on it (`RAG_CATALOG_URL`); a second copy into the same database is
refused, naming the option."""

from __future__ import annotations

import json

from tests.unit.cli_helpers import env, run  # noqa: F401  (env is a fixture)


def test_the_sqlite_catalog_moves_into_postgresql(env, pg_url, monkeypatch):
    assert run("ingest", str(env), "--kb", "moved", "-q").exit_code == 0
    key = run("keys", "create", "reader", "--read", "moved")
    assert key.exit_code == 0, key.output
    before = json.loads(run("docs", "--kb", "moved", "--json").output)
    copied = run("catalog", "copy", "--to", pg_url)
    assert copied.exit_code == 0, copied.output
    assert "1 api_keys" in copied.output and "1 kbs" in copied.output
    monkeypatch.setenv("RAG_CATALOG_URL", pg_url)
    assert json.loads(run("docs", "--kb", "moved", "--json").output) == before
    assert "reader" in run("keys", "list").output
    assert run("check", "--kb", "moved").exit_code == 0
    again = run("catalog", "copy", "--to", pg_url)
    assert again.exit_code == 2 and "holds rows already" in again.output
    assert run("catalog", "copy", "--to", "sqlite:///x.db").exit_code == 2
