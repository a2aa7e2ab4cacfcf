"""Document version families (rag/versions.py) on files the tests write and ingest for real:
name markers, text overlap, the stored families, the newest version preferred at query time (or
the one the question names), the note saying which version was used, the switch, `rag docs`."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from ingest.service import build_ingestor
from rag.adapters.llm_fake import ScriptedLLM
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag import versions
from rag.versions import detect, jaccard, shingles, split_marker
from tests.unit.kb_fixtures import router

BODY = ("Attendance policy. Staff may work from home {days} days per week after agreeing it with their team lead. "
        "Core hours are from {core} to 15:00 on every working day. Late arrivals must be reported to the team "
        "lead before ten o'clock. Overtime is compensated with time off within the same quarter. Attendance is "
        "recorded in the HR portal by every employee. Questions about this policy go to the HR office.")
OLD = BODY.format(days="two", core="10:00")
NEW = BODY.format(days="three", core="9:30")
TRAVEL = ("Travel policy. Book trains in second class. Flights need approval from a director. Hotel costs are "
          "refunded up to 150 euros per night.")


def echo_first_source(messages) -> str:
    """The second sentence of source [1] (the best ranked, wherever the prompt lists it), cited."""
    block = re.search(r"^\[1\] [^\n]*\n([^\n]+)", messages[-1]["content"], flags=re.M)
    return block.group(1).split(". ")[1] + " [1]."


@pytest.fixture
def kb(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "Attendance policy 2023.md").write_text(OLD, encoding="utf-8")
    (docs / "Attendance policy 2024.md").write_text(NEW, encoding="utf-8")
    (docs / "Travel policy.md").write_text(TRAVEL, encoding="utf-8")
    (docs / "Travel policy 2024.md").write_text("Travel policy. A completely different text about parking "
                                                "spaces and the cafeteria menu.", encoding="utf-8")
    config = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="edge", rerank_model="none")
    services = build_services(config, embedder=HashEmbedder(dim=64),
                              llm=ScriptedLLM(router(answer=echo_first_source)))
    report = build_ingestor(services, "hr").ingest_folder(docs)
    assert report.count("indexed") == 4
    return services


def test_split_marker():
    assert split_marker("Attendance policy 2023") == ("attendance policy", "2023", (2023,))
    assert split_marker("handbook_v2.1") == ("handbook", "v2.1", (2, 1))
    assert split_marker("report-2024-03") == ("report", "2024-03", (2024, 3))
    assert split_marker("contract (1)") == ("contract", "(1)", (1,))
    assert split_marker("员工手册第二版")[1:] == ("第二版", (2,))
    assert split_marker("Travel policy") == ("travel policy", "", ())


def test_detect_needs_the_same_name_and_overlapping_text():
    assert jaccard(shingles(OLD), shingles(NEW)) >= 0.5
    found = detect([("a", "p 2023.md", "", 1.0, OLD), ("b", "p 2024.md", "", 2.0, NEW),
                    ("c", "q 2024.md", "", 3.0, NEW), ("d", "p v3.md", "", 4.0, TRAVEL)], 0.5)
    assert {(v.doc_id, v.order, v.newest) for v in found} == {("a", 1, False), ("b", 2, True)}


def test_families_are_stored_and_ordered(kb):
    from rag.versions import families

    fams = families(kb.kbs.open("hr"))
    assert sorted((v.source, v.order, v.newest) for v in fams.values()) == [
        ("Attendance policy 2023.md", 1, False), ("Attendance policy 2024.md", 2, True)]
    versions._CACHE.clear()
    assert families(kb.kbs.open("hr")) == fams  # read back from the doc_versions table


def test_families_are_kept_in_memory_until_a_document_changes(kb, tmp_path, monkeypatch):
    from rag.versions import families

    knowledge = kb.kbs.open("hr")
    first = families(knowledge)
    listed = []
    real = knowledge.catalog.list_docs
    monkeypatch.setattr(knowledge.catalog, "list_docs", lambda *a, **k: listed.append(a) or real(*a, **k))
    assert families(knowledge) == first and not listed  # the same generation: no listing per query
    newer = tmp_path / "more"
    newer.mkdir()
    (newer / "Attendance policy 2025.md").write_text(BODY.format(days="four", core="9:00"), encoding="utf-8")
    build_ingestor(kb, "hr").ingest_folder(newer, prune=False)
    fams = families(knowledge)
    assert listed and sorted((v.source, v.order, v.newest) for v in fams.values()) == [
        ("Attendance policy 2023.md", 1, False), ("Attendance policy 2024.md", 2, False),
        ("Attendance policy 2025.md", 3, True)]


def test_query_uses_the_newest_version_and_says_so(kb):
    answer = kb.pipeline.answer("How many days per week may staff work from home?", "hr")
    assert {s.source for s in answer.sources} <= {"Attendance policy 2024.md", "Travel policy.md",
                                                   "Travel policy 2024.md"}
    assert answer.answer.startswith("Staff may work from home three days per week")
    [family] = answer.info["versions"]
    assert family["used"] == ["Attendance policy 2024.md"] and family["dropped"] == ["Attendance policy 2023.md"]
    assert answer.answer.endswith("(Version used: Attendance policy 2024.md; the newest of 2 versions; "
                                  "Attendance policy 2023.md states other figures.)")
    assert answer.citations and all(c.supported for c in answer.citations)


def test_a_question_naming_an_older_version_gets_it(kb):
    answer = kb.pipeline.answer("In the 2023 policy, how many days per week may staff work from home?", "hr")
    assert answer.answer.startswith("Staff may work from home two days per week")
    assert answer.info["versions"][0]["used"] == ["Attendance policy 2023.md"]
    assert "the newest is Attendance policy 2024.md" in answer.answer


def test_switched_off_both_versions_are_sources(kb):
    answer = kb.pipeline.answer("How many days per week may staff work from home?", "hr", prefer_latest=False)
    assert {"Attendance policy 2023.md", "Attendance policy 2024.md"} <= {s.source for s in answer.sources}
    assert "versions" not in answer.info and "Version used" not in answer.answer


def test_stream_sends_the_note_as_a_last_token(kb):
    events = list(kb.pipeline.stream("How many days per week may staff work from home?", "hr"))
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == events[-1]["answer"]["answer"] and tokens.endswith("states other figures.)")


def test_rag_docs_shows_the_families(tmp_path, monkeypatch):
    from cli.main import app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "Attendance policy 2023.md").write_text(OLD, encoding="utf-8")
    (docs / "Attendance policy 2024.md").write_text(NEW, encoding="utf-8")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    ingested = CliRunner().invoke(app, ["ingest", str(docs), "--kb", "hr", "-q"])
    assert ingested.exit_code == 0 and "version families: 1" in ingested.output
    result = CliRunner().invoke(app, ["docs", "--kb", "hr"])
    assert result.exit_code == 0, result.output
    assert re.search(r"1 version family\(ies\).*\n  \w+: Attendance policy 2023\.md < Attendance policy 2024\.md",
                     result.output)
    rows = json.loads(CliRunner().invoke(app, ["docs", "--kb", "hr", "--json"]).output)
    assert {r["source"]: (r["version_order"], r["latest_version"]) for r in rows} == {
        "Attendance policy 2023.md": (1, False), "Attendance policy 2024.md": (2, True)}
