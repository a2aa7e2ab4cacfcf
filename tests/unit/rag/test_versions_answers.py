"""Versions in answers (issue 35), through the CLI and the API on real files: the note only on
answers citing a versioned source, an old version's hit replaced by the newest one's matching chunk
(unless the question names the old one), each statement labelled with its version when several
versions are sources, versions dated only in their text, short renumbered policies, and no false
families on the shipped corpora."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from eval.datasets import load_dataset
from ingest.service import build_ingestor
from rag import factory
from rag.adapters.llm_fake import ScriptedLLM
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.versions import detect
from tests.unit.cli_helpers import EXAMPLES, run
from tests.unit.kb_fixtures import router

ATTENDANCE = ("考勤管理办法（{year}版）\n\n第一条 员工每天上午{start}前到岗，下午六点后下班。\n第二条 迟到超过{late}分钟的，"
              "按旷工半天处理。\n第三条 每月迟到累计{times}次的，扣发当月全勤奖。\n第四条 因公外出的，应提前在考勤系统中"
              "提交外出申请。\n第五条 本办法由人力资源部负责解释。")
REMOTE = ("# Remote work policy\n\nEmployees may work from home {days} days per week. Remote days must be agreed "
          "with the team lead one week in advance. Core hours are from 10:00 to 15:00 on remote days. The company "
          "pays for a headset and a second screen. The security rules of the office apply at home as well.")
EXPENSE = ("# {title}\n\n{intro} effective from {date}. Employees submit expense claims within {days} days of "
           "the expense. Receipts must be attached to every claim. Claims above 500 euros need the approval of a "
           "director. Refunds are paid with the next salary.")
FILES = {
    "考勤管理办法2023版.txt": ATTENDANCE.format(year=2023, start="九点", late="十五", times="三"),
    "考勤管理办法2024版.txt": ATTENDANCE.format(year=2024, start="九点半", late="三十", times="五"),
    "remote-work-policy-v1.md": REMOTE.format(days="two"),
    "remote-work-policy-v2.md": REMOTE.format(days="three"),
    "expense-claims.md": EXPENSE.format(title="Expense claims", intro="This policy is", date="1 March 2022",
                                        days=60),
    "travel-and-expense-rules.md": EXPENSE.format(title="Expense rules", intro="These rules are",
                                                  date="1 January 2025", days=30),
}


def write_docs(folder: Path) -> Path:
    shutil.copytree(EXAMPLES, folder)
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def blocks(messages) -> list[tuple[int, str, str]]:
    """(number, heading, text) of each source of the answer prompt."""
    content = messages[-1]["content"]
    starts = list(re.finditer(r"^\[(\d+)\] ([^\n]*)\n", content, flags=re.M))
    out = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else content.rfind("\n\n")
        out.append((int(m.group(1)), m.group(2), content[m.end():end]))
    return out


def cite(keyword: str, every: bool = False):
    """An answer prompt reply: the sentence holding `keyword` of the first source that has it (or
    of every one), cited."""
    def answer(messages) -> str:
        out = []
        for number, _, text in blocks(messages):
            for sentence in re.findall(r"[^\n.。]*[.。]", text):
                if keyword in sentence:
                    out.append(f"{sentence.strip()[:-1]} [{number}]{sentence.strip()[-1]}")
                    break
            if out and not every:
                break
        return " ".join(out)
    return answer


def services_for(tmp_path: Path, keyword: str, every: bool = False) -> factory.Services:
    config = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="edge", rerank_model="none",
                      api_admin_key="admin-key", default_kb="hr")
    services = factory.build_services(config, embedder=HashEmbedder(dim=64),
                                      llm=ScriptedLLM(router(answer=cite(keyword, every))))
    report = build_ingestor(services, "hr").ingest_folder(write_docs(tmp_path / "docs"))
    assert report.count("indexed") == len(FILES) + 4
    return services


def ask_api(services: factory.Services, **body) -> dict:
    with TestClient(create_app(services)) as client:
        r = client.post("/v1/query", json={"kb": "hr", **body}, headers={"Authorization": "Bearer admin-key"})
    assert r.status_code == 200, r.text
    return r.json()


def test_no_version_note_on_an_answer_citing_no_versioned_source(tmp_path):
    services = services_for(tmp_path, "工作满五年")
    data = ask_api(services, question="工作满五年的员工考勤有什么规定？", strategy="stuff")
    assert {"考勤管理办法2023版.txt", "考勤管理办法2024版.txt"} & {s["document"] for s in data["sources"]}
    cited = {data["sources"][c["source_number"] - 1]["document"] for c in data["citations"]}
    assert cited == {"员工休假制度.md"}, data["answer"]
    assert "使用的版本" not in data["answer"] and "Version used" not in data["answer"]


def test_the_note_stays_on_an_answer_citing_a_versioned_source(tmp_path):
    services = services_for(tmp_path, "迟到超过")
    data = ask_api(services, question="迟到多久按旷工处理？")
    assert "迟到超过三十分钟的，按旷工半天处理 [" in data["answer"] and "十五分钟" not in data["answer"]
    assert "（使用的版本：考勤管理办法2024版.txt，共 2 个版本，最新版本" in data["answer"]


def test_text_dated_versions_prefer_the_newer_and_say_the_older_differs(tmp_path):
    services = services_for(tmp_path, "within")
    data = ask_api(services, question="Within how many days must expense claims be submitted?")
    assert data["answer"].startswith("Employees submit expense claims within 30 days of the expense [")
    assert ("(Version used: travel-and-expense-rules.md; the newest of 2 versions; expense-claims.md states "
            "other figures.)") in data["answer"]
    assert "expense-claims.md" not in {s["document"] for s in data["sources"]}


@pytest.fixture
def cli_kb(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash")
    monkeypatch.setenv("RAG_RERANK_MODEL", "none")
    monkeypatch.delenv("RAG_DEFAULT_KB", raising=False)
    ingested = run("ingest", str(write_docs(tmp_path / "docs")), "--kb", "hr", "-q")
    assert ingested.exit_code == 0, ingested.output
    return monkeypatch


def ask_cli(*args: str) -> dict:
    result = run("ask", *args, "--kb", "hr", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_an_old_version_hit_is_replaced_by_the_newest_versions_chunk(cli_kb):
    question = "Employees may work from home two days per week?"
    alone = ask_cli(question, "--no-generate", "--limit", "1", "--all-versions")
    assert [s["document"] for s in alone["sources"]] == ["remote-work-policy-v1.md"]  # only the old one found
    data = ask_cli(question, "--no-generate", "--limit", "1")
    assert [s["document"] for s in data["sources"]] == ["remote-work-policy-v2.md"]
    assert "three days per week" in data["sources"][0]["text"]
    [family] = data["info"]["versions"]
    assert family["used"] == ["remote-work-policy-v2.md"] and family["replaced"] == 1
    named = ask_cli("In remote-work-policy v1: may employees work from home two days per week?", "--no-generate",
                    "--limit", "1")
    assert [s["document"] for s in named["sources"]] == ["remote-work-policy-v1.md"]


def test_all_versions_label_each_statement_with_its_version(cli_kb):
    real = factory.build_services
    cli_kb.setattr("cli.query_cmds.build_services",
                   lambda settings: real(settings, llm=ScriptedLLM(router(answer=cite("from home", every=True)))))
    data = ask_cli("How many days per week may employees work from home?", "--all-versions", "--limit", "8",
                  "--strategy", "stuff")
    answer = data["answer"]
    assert "Employees may work from home three days per week [" in answer
    assert re.search(r"three days per week \[\d\] \(remote-work-policy-v2, newest version\)\.", answer), answer
    assert re.search(r"two days per week \[\d\] \(remote-work-policy-v1, older version\)\.", answer), answer
    assert "Version used" not in answer
    for c in data["citations"]:  # the citations moved with the labels
        assert answer[c["sentence_start"]:c["sentence_end"]].startswith(c["sentence"][:-1] + " [")


def test_short_policies_renumbered_in_every_sentence_are_one_family():
    old = "Parking costs 5 euros per day. Staff get 2 free days per month. Visitors may park for 3 hours."
    new = "Parking costs 6 euros per day. Staff get 4 free days per month. Visitors may park for 2 hours."
    found = detect([("a", "parking 2023.md", "", 1.0, old), ("b", "parking 2024.md", "", 2.0, new)], 0.5)
    assert {(v.doc_id, v.newest) for v in found} == {("a", False), ("b", True)}
    other = "Parking is free for electric cars on the ground floor. Bicycles go to the basement."
    assert not detect([("a", "parking 2023.md", "", 1.0, old), ("c", "parking 2024.md", "", 2.0, other)], 0.5)


def test_versions_dated_only_in_their_text_are_ordered_by_that_date():
    docs = [(name, name, "", 0.0, text) for name, text in FILES.items() if name.endswith(("rules.md", "claims.md"))]
    found = detect(docs, 0.5)
    assert sorted((v.source, v.order, v.label) for v in found) == [
        ("expense-claims.md", 1, "2022-03-01"), ("travel-and-expense-rules.md", 2, "2025-01-01")]


@pytest.mark.parametrize("name", ["covidqa", "cmrc2018"])
def test_no_false_families_on_the_shipped_corpora(name):
    dataset = load_dataset(name)
    docs = [(d.id, f"{d.id}.txt", d.title, 0.0, d.text) for d in dataset.corpus.values()]
    assert detect(docs, 0.5) == []


def test_eval_corpus_files_keep_readable_names_so_their_versions_are_found():
    from eval.datasets import corpus_file_name, doc_id_from_source
    from rag.versions import split_marker

    name = corpus_file_name("考勤管理办法2023版")
    assert name == "考勤管理办法2023版.txt" and doc_id_from_source(name) == "考勤管理办法2023版"
    assert split_marker(Path(name).stem)[1] == "2023"
    assert corpus_file_name("a/b 50%") == "a%2Fb%2050%25.txt"
