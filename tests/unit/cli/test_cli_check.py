"""`rag check [--repair]` and `rag drop` over the lifecycle states of issue 31: orphans of killed
reindexes and half-dropped knowledge bases are reported and repaired, `drop` says a name is
unknown before asking anything, and a store held by `rag serve` gets the API call to use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from cli.main import app
from rag.adapters.edge_store import EdgeStore
from rag.factory import build_services
from rag.kb import KnowledgeBases
from rag.settings import load_settings
from tests.unit.cli_helpers import ROOT, env, run  # noqa: F401  (env is a fixture)


def _killed(monkeypatch, cls: type, method: str, operation) -> None:
    """Run `operation` on fresh services with `cls.method` failing as a kill would (nothing after it runs)."""
    services = build_services(load_settings())
    try:
        with monkeypatch.context() as patch:
            def killed(*args, **kwargs):
                raise RuntimeError("killed")

            patch.setattr(cls, method, killed)
            try:
                operation(services.kbs)
            except RuntimeError:
                pass
    finally:
        services.close()


def test_check_reports_orphans_and_half_dropped_kbs_and_repair_fixes_them(env, monkeypatch):
    for kb in ("hb", "gone"):
        assert run("ingest", str(env), "--kb", kb, "-q").exit_code == 0
    _killed(monkeypatch, KnowledgeBases, "_switch_collection", lambda kbs: kbs.reindex("hb"))
    _killed(monkeypatch, EdgeStore, "drop_collection", lambda kbs: kbs.drop("gone"))
    assert [k["name"] for k in json.loads(run("kbs", "--json").stdout)] == ["hb"]
    checked = run("check", "--kb", "hb")
    assert checked.exit_code == 1, checked.output
    assert "orphan_collections: 1 (e.g. hb__v2)" in checked.output
    assert "orphan_lexical: 1 (e.g. hb__v2)" in checked.output
    assert "half_dropped: 1 (e.g. gone)" in checked.output and "rag check --repair" in checked.output
    repaired = run("check", "--kb", "hb", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "repair: finished interrupted drops: 1: gone" in repaired.output
    assert "repair: dropped orphans: 1: hb__v2" in repaired.output and "ok: stores agree" in repaired.output
    again = run("check", "--kb", "hb", "--repair")
    assert again.exit_code == 0 and "repair: nothing to repair" in again.output


def test_a_half_dropped_kb_is_finished_by_drop_without_a_question(env, monkeypatch):
    assert run("ingest", str(env), "--kb", "dl", "-q").exit_code == 0
    _killed(monkeypatch, EdgeStore, "drop_collection", lambda kbs: kbs.drop("dl"))
    result = CliRunner().invoke(app, ["drop", "--kb", "dl"])
    assert result.exit_code == 0 and "dropped dl (finished an interrupted drop)" in result.output, result.output
    assert run("ingest", str(env), "--kb", "dl", "-q").exit_code == 0 and run("check", "--kb", "dl").exit_code == 0


def test_drop_says_a_kb_is_unknown_before_asking(env):
    unknown = CliRunner().invoke(app, ["drop", "--kb", "ghost"])
    assert unknown.exit_code == 2 and "unknown knowledge base 'ghost'" in unknown.output
    assert "delete knowledge base" not in unknown.output
    assert run("ingest", str(env), "--kb", "kept", "-q").exit_code == 0
    declined = CliRunner().invoke(app, ["drop", "--kb", "kept"], input="n\n")
    assert declined.exit_code == 1 and "delete knowledge base 'kept'" in declined.output
    assert run("check", "--kb", "kept").exit_code == 0


HOLD_STORE = """
import sys
from rag.adapters.edge_store import EdgeStore
store = EdgeStore(sys.argv[1])
store.ids(sys.argv[2])
print("holding", flush=True)
sys.stdin.read()
"""


def test_check_while_another_process_holds_the_store_names_the_api_call(env, tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_HOST", raising=False)
    monkeypatch.delenv("RAG_PORT", raising=False)
    assert run("ingest", str(env), "--kb", "served", "-q").exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(tmp_path / "data" / "vectors-edge"), "served"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = run("check", "--kb", "served")
        repair = run("check", "--kb", "served", "--repair")
    finally:
        holder.communicate("", timeout=30)
    assert result.exit_code == 1, result.output
    assert ('the server holds this store (`rag serve` is running); use: curl -H "Authorization: Bearer $KEY" '
            "http://127.0.0.1:8000/v1/kbs/served/check") in result.output
    assert repair.exit_code == 1 and "curl -X POST -H" in repair.output and "/v1/kbs/served/repair" in repair.output
    assert run("check", "--kb", "served").exit_code == 0  # released: the CLI checks by itself again
