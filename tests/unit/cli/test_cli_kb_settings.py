"""`rag ingest` under a knowledge base's own settings: they apply unless its flags say otherwise."""

from __future__ import annotations

import json

from rag.catalog import Catalog
from tests.unit.cli_helpers import env, run  # noqa: F401  (env is a fixture)


def _chunks(result) -> int:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])["chunks_added"]


def test_kb_settings_apply_and_flags_override_them(env, tmp_path):
    assert run("ingest", str(env), "--kb", "hb", "-q").exit_code == 0
    catalog = Catalog(tmp_path / "data" / "catalog.sqlite")
    catalog.update_kb_meta("hb", {"settings": {"chunk_size": 60, "chunk_overlap": 5, "tags": {"src": "kb"}}})
    catalog.close()
    small = _chunks(run("ingest", str(env), "--kb", "hb", "--json"))  # re-chunked: its chunking changed
    big = _chunks(run("ingest", str(env), "--kb", "hb", "--chunk-size", "4000", "--chunk-overlap", "0", "--json"))
    assert small > big > 0
    docs = json.loads(run("docs", "--kb", "hb", "--json").stdout)
    assert all(d["tags"] == {"src": "kb"} for d in docs)
    bad = run("ingest", str(env), "--kb", "hb", "--chunk-overlap", "100", "-q")  # not below the kb's size 60
    assert bad.exit_code == 2 and "chunk_overlap (100) must be smaller than chunk_size (60)" in bad.output
