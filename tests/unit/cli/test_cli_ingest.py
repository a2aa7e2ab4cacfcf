"""`rag ingest / docs / kbs / rm / check / reindex` through the real CLI entry point."""

from __future__ import annotations

import json

from tests.unit.cli_helpers import env, run  # noqa: F401  (env is a fixture)


def test_ingest_summary_and_unchanged_rerun(env):
    result = run("ingest", str(env), "--kb", "handbook", "--tag", "team=hr", "-q")
    assert result.exit_code == 0, result.output
    assert "files indexed: 4" in result.output
    assert "hash bag-of-words test embedder" in result.output  # the model in use is named
    again = run("ingest", str(env), "--kb", "handbook", "--tag", "team=hr", "-q")
    assert again.exit_code == 0
    assert "unchanged: 4" in again.output and "nothing changed" in again.output


def test_ingest_json_docs_kbs_check_rm(env):
    result = run("ingest", str(env), "--kb", "hb", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["indexed"] == 4 and summary["chunks_added"] >= 4
    listed = json.loads(run("docs", "--kb", "hb", "--json").stdout)
    assert sorted(d["source"] for d in listed) == sorted(p.name for p in env.iterdir())
    assert all(d["chunks"] > 0 for d in listed)
    kbs = json.loads(run("kbs", "--json").stdout)
    assert kbs[0]["name"] == "hb" and kbs[0]["documents"] == 4
    assert run("check", "--kb", "hb").exit_code == 0
    removed = run("rm", "faq.csv", "--kb", "hb")
    assert removed.exit_code == 0 and "removed faq.csv" in removed.output
    assert len(json.loads(run("docs", "--kb", "hb", "--json").stdout)) == 3
    assert run("check", "--kb", "hb").exit_code == 0


def test_qa_chunker_imports_spreadsheet_rows(env):
    result = run("ingest", str(env), "--kb", "qa", "--chunker", "qa", "--json")
    assert result.exit_code == 0, result.output
    listed = {d["source"]: d for d in json.loads(run("docs", "--kb", "qa", "--json").stdout)}
    assert listed["faq.csv"]["chunks"] == 4


def test_bad_arguments_give_one_line_and_nonzero_exit(env, tmp_path):
    missing = run("ingest", str(tmp_path / "nope"), "--kb", "x")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_kb = run("ingest", str(env), "--kb", "bad name!")
    assert bad_kb.exit_code == 2 and "invalid knowledge base name" in bad_kb.output
    bad_chunker = run("ingest", str(env), "--kb", "x", "--chunker", "magic")
    assert bad_chunker.exit_code == 2 and "chunker" in bad_chunker.output
    bad_tag = run("ingest", str(env), "--kb", "x", "--tag", "novalue")
    assert bad_tag.exit_code == 2 and "--tag" in bad_tag.output
    unknown = run("docs", "--kb", "ghost")
    assert unknown.exit_code == 2 and "unknown knowledge base" in unknown.output
    bad_edits = run("ingest", str(env), "--kb", "x", "--edits", "maybe")
    assert bad_edits.exit_code == 2 and "--edits" in bad_edits.output
    for result in (missing, bad_kb, bad_chunker, bad_tag, unknown, bad_edits):
        assert "Traceback" not in result.output


def test_nothing_ingestible_exits_nonzero(tmp_path, env):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.xyz").write_text("x")
    result = run("ingest", str(junk), "--kb", "j", "-q")
    assert result.exit_code == 1 and "nothing could be ingested" in result.output
    assert "unsupported" in result.output


def test_reindex_switches_to_new_model(env, monkeypatch):
    assert run("ingest", str(env), "--kb", "r", "-q").exit_code == 0
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    result = run("reindex", "--kb", "r")
    assert result.exit_code == 0, result.output
    assert "re-embedded" in result.output and "r__v2" in result.output
    assert run("check", "--kb", "r").exit_code == 0


def test_names_and_reasons_from_data_are_printed_escaped(env):
    evil = "evil\x1b[2J\x9b31m.txt"
    (env / evil).write_text("The escape sequence file talks about kettles. " * 10, encoding="utf-8")
    (env / "bad\x1b]0;pwned\x07.pdf").write_bytes(b"%PDF-1.4 not really")
    result = run("ingest", str(env), "--kb", "esc", "-q")
    assert result.exit_code == 3, result.output  # the bad PDF is skipped, the others indexed
    assert "\x1b" not in result.output and "\x07" not in result.output and "\x9b" not in result.output
    assert "skipped  bad\\u001b]0;pwned\\u0007.pdf: " in result.output
    listing = run("docs", "--kb", "esc")
    assert "\x1b" not in listing.output and "evil\\u001b[2J\\u009b31m.txt" in listing.output
    as_json = run("docs", "--kb", "esc", "--json")
    assert evil in [d["source"] for d in json.loads(as_json.stdout)]  # JSON stays exact


def test_term_safe_keeps_newlines_and_tabs_only_where_meant():
    from cli.output import name, term_safe

    assert term_safe("a\tb\nc\rd\x1b[0m\u202e") == "a\tb\nc\\u000dd\\u001b[0m\\u202e"
    assert name("a\nb\tc") == "a\\u000ab\\u0009c"
    assert json.loads(term_safe(json.dumps({"k": "x\x9by"}, ensure_ascii=False))) == {"k": "x\x9by"}


def test_links_outside_are_reported_and_follow_links_indexes_them(env, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0 the outside secret line. " * 10, encoding="utf-8")
    (env / "passwd.txt").symlink_to(outside)
    result = run("ingest", str(env), "--kb", "links", "-q")
    assert result.exit_code == 3, result.output  # the link is skipped, the others indexed
    assert "skipped  passwd.txt: symbolic link to a file outside the folder (use --follow-links" in result.output
    assert "passwd.txt" not in run("docs", "--kb", "links").output
    followed = run("ingest", str(env), "--kb", "links", "-q", "--follow-links")
    assert followed.exit_code == 0 and "files indexed: 1" in followed.output
    assert "passwd.txt" in run("docs", "--kb", "links").output


def test_ingest_summary_notes_replaced_bytes(env):
    (env / "damaged.txt").write_bytes("Größe des Kessels: 1,7 Liter. ".encode() * 20 + b"\xff\xfe")
    result = run("ingest", str(env), "--kb", "notes", "-q")
    assert result.exit_code == 0, result.output
    assert "note     damaged.txt: decoded as UTF-8, 2 invalid byte(s) replaced" in result.output


def test_retrieved_sources_are_printed_escaped(env, monkeypatch):
    monkeypatch.setenv("RAG_RERANK_MODEL", "none")
    (env / "kettle\x1b[2J.txt").write_text("The Zephyr kettle boils water in two minutes. " * 10, encoding="utf-8")
    assert run("ingest", str(env), "--kb", "esc2", "-q").exit_code == 0
    result = run("ask", "How fast does the Zephyr kettle boil water?", "--kb", "esc2", "--no-generate")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "kettle\\u001b[2J.txt" in result.output


def test_tags_are_parsed_as_the_api_parses_them(env):
    """`--tag` takes comma lists like the API's `tags` field (one `rag.types.parse_tags`)."""
    result = run("ingest", str(env / "faq.csv"), "--kb", "tagged", "--tag", "team=hr, lang=en", "--tag", "year=2024",
                 "-q")
    assert result.exit_code == 0, result.output
    (doc,) = json.loads(run("docs", "--kb", "tagged", "--json").stdout)
    assert doc["tags"] == {"team": "hr", "lang": "en", "year": "2024"}


def test_ingest_builds_the_search_graph_past_its_threshold_and_rag_index_on_demand(env, monkeypatch):
    from rag.adapters.edge_store import EdgeStore

    asked = []
    real = EdgeStore.optimize

    def spy(self, name, min_unindexed=0):
        asked.append(min_unindexed)
        return real(self, name, min_unindexed)

    monkeypatch.setattr(EdgeStore, "optimize", spy)
    assert run("ingest", str(env), "--kb", "hb", "-q").exit_code == 0
    assert asked == [20_000]  # the default: a handful of vectors is searched exactly, no graph
    monkeypatch.setenv("RAG_HNSW_BUILD_MIN_UNINDEXED", "0")
    assert run("ingest", str(env), "--kb", "hb", "-q").exit_code == 0 and asked == [20_000]  # 0: never
    monkeypatch.setattr(EdgeStore, "optimize", lambda self, name, min_unindexed=0: asked.append(min_unindexed) or True)
    monkeypatch.setenv("RAG_HNSW_BUILD_MIN_UNINDEXED", "3")
    built = run("ingest", str(env), "--kb", "hb", "-q")
    assert asked[-1] == 3 and "vector search graph (HNSW) built in" in built.output
    now = run("index", "--kb", "hb")
    assert now.exit_code == 0 and asked[-1] == 1 and "vector search graph (HNSW) built in" in now.output
    assert run("index", "--kb", "nope").exit_code == 2
