"""Catalog questions (issue 35) on real files ingested through `rag ingest`, asked through `rag ask`:
the phrasing table (English and Chinese, with the ordinary questions that must not be captured),
"When was the leave policy last updated?" naming the leave policy, newest / oldest, added or
modified within a period, by type, tag and name. Modified times are set with os.utime."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from rag import collection
from rag.collection import detect
from rag.factory import build_services
from rag.settings import Settings
from rag.types import Filter
from tests.unit.fixtures_files import write_pdf

KB = "t"
DAY = 86400.0
NOW = time.time()
DOCS = {  # name -> (text, age in days)
    "leave-policy.md": ("# Employee Leave Policy\n\nEmployees get twenty days of annual leave per year.\n", 20),
    "员工休假制度.md": ("# 员工休假制度\n\n## 年假\n\n员工每年享有十天带薪年假。\n", 30),
    "remote-work-policy-v1.md": ("# Remote Work Policy\n\nStaff may work from home two days per week.\n", 200),
    "remote-work-policy-v2.md": ("# Remote Work Policy\n\nStaff may work from home three days per week.\n", 2),
    "expense-rules.md": ("# Expense rules\n\nHotel limit is 600 CNY per night; taxis need a receipt.\n", 10),
    "security-policy.md": ("# Information Security Policy\n\nPasswords have 14 characters; the VPN is mandatory.\n",
                           0.0005),
    "考勤管理办法2023版.txt": ("考勤管理办法（2023版）\n\n上班时间为九点至十八点。\n", 400),
}
PDF_AGE = 100


@pytest.fixture(scope="module")
def kb_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    docs = root / "docs"
    docs.mkdir()
    for name, (text, age) in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
        os.utime(docs / name, (NOW - age * DAY, NOW - age * DAY))
    pdf = write_pdf(docs, "travel-guide.pdf")
    os.utime(pdf, (NOW - PDF_AGE * DAY, NOW - PDF_AGE * DAY))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_DATA_DIR", str(root / "data"))
        mp.setenv("RAG_EMBED_MODEL", "hash")
        mp.delenv("RAG_DEFAULT_KB", raising=False)
        result = CliRunner().invoke(app, ["ingest", str(docs), "--kb", KB, "-q", "--tag", "dept=hr"])
        assert result.exit_code == 0, result.output
        yield root / "data"


def ask(question: str) -> str:
    result = CliRunner().invoke(app, ["ask", question, "--kb", KB])
    assert result.exit_code == 0, result.output
    return result.stdout.split("\n\nSources:")[0].strip()


# -- the phrasing table -----------------------------------------------------------------------
# (question, intent or None = an ordinary question for retrieval). Before the fix the rows marked
# "new" were None (sent to the LLM), and "list the PDFs" listed every document.
TABLE = [
    ("How many documents are in the knowledge base?", "count"), ("How many documents do you have?", "count"),
    ("What is the number of documents?", "count"), ("知识库里有多少篇文章？", "count"), ("一共有多少份文档？", "count"),
    ("有多少文档", "count"),  # new
    ("文档数量", "count"),  # new
    ("List all documents", "list"), ("What documents are in the knowledge base?", "list"),
    ("知识库里有哪些文档？", "list"), ("列出所有文件", "list"),
    ("list the newest documents", "latest"), ("Show the 3 most recent documents", "latest"),  # new
    ("What are the latest files?", "latest"), ("最新的文档有哪些", "latest"), ("最新的3篇文档", "latest"),  # new
    ("list the oldest documents", "latest"), ("最早的文档是哪些？", "latest"),  # new
    ("Which document was most recently updated?", "latest"), ("最近更新的文档是哪个", "latest"),
    ("what was added this week", "recent"), ("What changed today?", "recent"),  # new
    ("Which documents were modified in the last 7 days?", "recent"), ("documents updated this week", "recent"),
    ("Any new documents this month?", "recent"), ("本周新增的文档", "recent"), ("最近一周更新了哪些文档？", "recent"),
    ("今天新增了哪些文件", "recent"), ("哪些文档是今天更新的", "recent"),  # new
    ("list the PDFs", "type"), ("How many PDFs are there?", "type"), ("有哪些PDF文件", "type"),  # new
    ("Show me all markdown files", "type"), ("PDF文件有哪些", "type"),  # new
    ("documents tagged dept=hr", "tag"), ("Which documents are tagged hr?", "tag"), ("标签为dept=hr的文档", "tag"),
    ("list documents named expense", "named"), ("文件名包含考勤的文档", "named"),  # new
    ("Which files mention the VPN?", "mention"), ("哪些文件提到了VPN", "mention"),
    ("List documents that mention hotel", "mention"), ("提到年假的文档有哪些", "mention"),  # new
    ("When was the leave policy last updated?", "updated"), ("员工休假制度是什么时候更新的？", "updated"),
    ("差旅费报销管理办法的更新时间是什么时候？", "updated"), ("What is the last modified date of leave-policy.md?", "updated"),
    # ordinary questions: retrieval as before
    ("What documents do I need for a visa?", None), ("最新的报销标准是什么？", None), ("Which policy covers travel?", None),
    ("How many days of leave do employees get?", None), ("What is the newest model of the Acme vacuum?", None),
    ("最新的考勤规定是什么", None), ("What's new in the 2024 attendance policy?", None),
    ("How many PDFs can I attach to an expense claim?", None), ("Show me the warranty terms", None),
    ("What files does the VPN client need?", None), ("员工每年有几天年假？", None),
    ("Which documents do I need to submit for reimbursement?", None), ("报销需要提交哪些材料？", None),
    ("What happens if I am late three times this week?", None), ("今天迟到了怎么办？", None),
    ("这个文件里说了什么？", None), ("When was it updated?", None), ("最新的文件要求是什么？", None),
    ("PDF", None), ("Excel", None),
]


@pytest.mark.parametrize("question,intent", TABLE)
def test_phrasing_table(question, intent):
    found = detect(question)
    assert (found.intent if found else None) == intent


def test_detected_details():
    assert detect("Show the 3 most recent documents").limit == 3
    assert detect("最新的三篇文档").limit == 3 and detect("list the newest documents").limit == collection_default()
    assert detect("Which document was most recently updated?").limit == 1
    assert detect("list the oldest documents").oldest and not detect("list the newest documents").oldest
    assert (detect("what was added this week").period, detect("what was added this week").added) == ("week", True)
    assert (detect("Which files were changed in the last 3 days?").period, detect("最近一周更新了哪些文档").period) == \
        ("days:3", "days:7")
    assert not detect("documents updated this week").added and detect("今天新增了哪些文件").period == "today"
    assert detect("documents tagged Dept=HR").term == "Dept=HR" and detect("有哪些PDF文件").term == "pdf"


def collection_default() -> int:
    from rag.collection_detect import DEFAULT_NEWEST

    return DEFAULT_NEWEST


# -- answers on real files through `rag ask` --------------------------------------------------

def test_leave_policy_question_names_the_leave_policy(kb_env):
    day = time.strftime("%Y-%m-%d", time.gmtime(NOW - 20 * DAY))
    assert ask("When was the leave policy last updated?").startswith(f"leave-policy.md was last modified on {day}")
    assert ask("员工休假制度是什么时候更新的？").startswith("员工休假制度.md 最后修改于")
    assert ask("When was the remote work policy last updated?").startswith("remote-work-policy-v2.md was")
    assert ask("When was remote-work-policy-v1.md last modified?").startswith("remote-work-policy-v1.md was")
    assert ask("考勤管理办法2023版是什么时候更新的？").startswith("考勤管理办法2023版.txt 最后修改于")


def test_a_name_no_document_holds_goes_to_retrieval(kb_env):
    """Without leave-policy.md, "the leave policy" names nothing ("policy" alone is not enough)."""
    services = build_services(Settings(data_dir=kb_env, embed_model="hash"))
    try:
        kb = services.kbs.open(KB)
        others = Filter(sources=tuple(n for n in DOCS if n != "leave-policy.md"))
        assert collection.answer(kb, detect("When was the leave policy last updated?"), "en", others) is None
        assert collection.answer(kb, detect("When was the vacation handbook last updated?"), "en") is None
        assert collection.answer(kb, detect("When was the security document last updated?"), "en").info[
            "document"] == "security-policy.md"
    finally:
        services.close()


def test_newest_and_oldest(kb_env):
    assert ask("list the newest documents").startswith(
        "The 5 most recently modified documents (newest first): security-policy.md")
    assert "remote-work-policy-v2.md" in ask("list the newest documents")
    text = ask("最新的3篇文档")
    assert text.startswith("修改时间最近的 3 篇文档（从新到旧）：security-policy.md") and "[3]" in text and "[4]" not in text
    assert ask("Which document was most recently updated?").startswith(
        "The most recently modified document is security-policy.md")
    assert ask("list the oldest documents").startswith(
        "The 5 least recently modified documents (oldest first): 考勤管理办法2023版.txt")
    assert ask("最早的文档是哪个").startswith("最早修改的文档是 考勤管理办法2023版.txt")


def test_added_or_modified_within_a_period(kb_env):
    added = ask("what was added this week")  # everything was indexed just now
    assert added.startswith(f"{len(DOCS) + 1} documents were added to the knowledge base this week (since ")
    week = ask("documents updated this week")
    assert "security-policy.md" in week and "leave-policy.md" not in week and "remote-work-policy-v1" not in week
    last7 = ask("Which documents were modified in the last 7 days?")
    assert last7.startswith("2 documents were modified in the last 7 days")
    assert "security-policy.md" in last7 and "remote-work-policy-v2.md" in last7
    zh = ask("最近一周更新了哪些文档？")
    assert zh.startswith("最近 7 天（") and "修改的文档有 2 篇" in zh
    assert ask("今天新增了哪些文件").startswith("今天（") and ask("本周新增的文档").count("[") == len(DOCS) + 1
    assert ask("What changed yesterday?").startswith("No document was modified yesterday (")


def test_by_type_tag_and_name(kb_env):
    assert ask("list the PDFs").startswith(f"The knowledge base {KB} holds 1 PDF document: travel-guide.pdf (")
    assert ask("有哪些PDF文件").startswith(f"知识库 {KB} 中共有 1 篇 PDF 文档：travel-guide.pdf")
    assert ask("Show me all markdown files").startswith(f"The knowledge base {KB} holds 6 Markdown documents")
    assert ask("list the Word documents") == f"The knowledge base {KB} holds no Word documents."
    assert ask("documents tagged dept=hr").startswith(f"{len(DOCS) + 1} documents are tagged dept=hr")
    assert ask("documents tagged dept=it") == "No document in the knowledge base is tagged dept=it."
    assert ask("标签为dept=hr的文档").startswith(f"有 {len(DOCS) + 1} 篇文档带有标签 dept=hr")
    named = ask("list documents named policy")
    assert named.startswith("4 documents have “policy” in their name or title") and "expense" not in named
    assert ask("文件名包含考勤的文档").startswith("名称或标题包含“考勤”的文档有 1 篇：考勤管理办法2023版.txt")


def test_counts_lists_and_mentions_in_both_languages(kb_env):
    assert ask("有多少文档").startswith(f"知识库 {KB} 中共有 {len(DOCS) + 1} 篇文档")
    assert ask("What is the number of documents?").startswith(f"The knowledge base {KB} holds {len(DOCS) + 1} docu")
    assert ask("List documents that mention hotel").startswith("1 document mentions “hotel”: expense-rules.md")
    assert ask("提到年假的文档有哪些").startswith("有 1 篇文档提到了“年假”：员工休假制度.md")


def test_readme_examples_are_answered_as_documented():
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Questions about the collection** (", 1)[1].split(") are answered", 1)[0]
    examples = section.replace("\n  ", " ").split("\"")[1::2]
    assert len(examples) >= 10 and [q for q in examples if detect(q) is None] == []
    assert detect("When was the leave policy last updated?").intent == "updated"  # named in the text
