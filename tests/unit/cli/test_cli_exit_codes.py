"""`rag ingest` exit codes (0 all indexed, 3 some files skipped or indexed in part, 1 nothing
ingested) and the invisible characters of the file names it shows."""

from __future__ import annotations

import json

from tests.unit.cli_helpers import env, run  # noqa: F401  (env is a fixture)


def test_skipped_files_give_exit_code_3_and_the_others_are_indexed(env):
    (env / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    result = run("ingest", str(env), "--kb", "partial", "-q")
    assert result.exit_code == 3, result.output
    assert "skipped  broken.pdf: " in result.output and "1 file(s) skipped or indexed in part" in result.output
    assert "files indexed: 4" in result.output
    again = run("ingest", str(env), "--kb", "partial", "--json")  # still one file left out: still 3
    assert again.exit_code == 3 and json.loads(again.stdout[again.stdout.index("{"):])["skipped"] == 1
    (env / "broken.pdf").unlink()
    assert run("ingest", str(env), "--kb", "partial", "-q").exit_code == 0


def test_exit_codes_are_in_the_help(env):
    help_text = " ".join(run("ingest", "--help").output.split())
    assert "3 when some files were skipped or indexed in part" in help_text
    assert "1 when nothing could be ingested" in help_text and "2 for bad arguments" in help_text


def test_invisible_characters_of_names_are_shown_escaped(env):
    (env / "report\u200b\u202egnp.txt").write_text("The kettle manual talks about descaling. " * 10,
                                                      encoding="utf-8")
    (env / "bad\u2066.pdf").write_bytes(b"%PDF-1.4 not really")
    result = run("ingest", str(env), "--kb", "names", "-q")
    assert result.exit_code == 3, result.output
    assert "\u200b" not in result.output and "\u202e" not in result.output and "\u2066" not in result.output
    assert "skipped  bad\\u2066.pdf: " in result.output
    listing = run("docs", "--kb", "names")
    assert "report\\u200b\\u202egnp.txt" in listing.output


def test_serve_refuses_several_workers_on_an_embedded_store(env, monkeypatch):
    """Each worker would open the same embedded shards: the second is refused (StoreHeld), so
    several workers need a Qdrant server."""
    monkeypatch.delenv("RAG_QDRANT_URL", raising=False)
    result = run("serve", "--workers", "2")
    assert result.exit_code == 2
    assert "--workers 2 needs a Qdrant server" in result.output
