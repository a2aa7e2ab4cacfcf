"""Questions about the collection answered from the catalog (rag/collection.py) through the real
pipeline: detection rules in English and Chinese (and ordinary questions left alone), counts, lists,
"which files mention X", modified times, documents as cited sources, the switch, streaming."""

from __future__ import annotations

import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.catalog import DocRecord
from rag.collection import detect
from tests.unit.kb_fixtures import KB, build_services, make_chunks, router


def register_docs(services) -> None:
    """Catalog rows for the fixture chunks, as ingestion writes them."""
    by_doc: dict[str, list] = {}
    for chunk in make_chunks():
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
    for doc_id, chunks in by_doc.items():
        first = chunks[0]
        record = DocRecord(KB, doc_id, first.source, "/docs", "h-" + doc_id, first.mtime, 1000 * len(chunks),
                           first.title, "md", dict(first.tags), "recursive", "indexed", [], [], 0.0)
        services.catalog.mark_indexed(record, [c.id for c in chunks])


@pytest.fixture
def services(tmp_path):
    s = build_services(tmp_path, llm=ScriptedLLM(router(answer="The warranty lasts two years [1].")))
    register_docs(s)
    return s


@pytest.mark.parametrize("question,intent,term", [
    ("How many documents are in the knowledge base?", "count", ""),
    ("how many files are there?", "count", ""),
    ("知识库里有多少篇文章？", "count", ""),
    ("List all documents", "list", ""),
    ("知识库里有哪些文档？", "list", ""),
    ("Which files mention the VPN?", "mention", "VPN"),
    ("Which documents talk about password rotation?", "mention", "password rotation"),
    ("哪些文件提到了VPN", "mention", "vpn"),
    ("When was the leave policy last updated?", "updated", "leave policy"),
    ("员工休假制度是什么时候更新的？", "updated", "员工休假制度"),
    ("Which document was most recently updated?", "latest", ""),
])
def test_detects_collection_questions(question, intent, term):
    found = detect(question)
    assert found is not None and found.intent == intent and found.term.lower() == term.lower()


@pytest.mark.parametrize("question", [
    "How long is the Acme X200 warranty?", "How many documents are required for a visa application?",
    "How many days of leave do employees get?", "What files does the VPN client need?",
    "员工每年有几天年假？", "这个文件里说了什么？", "Which is better, the VPN or the office network?",
    "Summarise the security policy", "How many characters must a password have?",
])
def test_ordinary_questions_are_not_routed(question):
    assert detect(question) is None


def test_count_lists_the_documents_as_cited_sources_without_the_llm(services):
    llm = services.llm
    answer = services.pipeline.answer("How many documents are in the knowledge base?", KB)
    assert llm.calls == [] and answer.model == "catalog" and not answer.refused
    assert answer.answer.startswith(f"The knowledge base {KB} holds 3 documents: ")
    assert [s.source for s in answer.sources] == ["acme-x200-manual.pdf", "security-policy.html", "员工休假制度.md"]
    assert [c.source_number for c in answer.citations] == [1, 2, 3]
    assert all(c.supported and c.origin == "catalog" for c in answer.citations)
    assert answer.info["collection"]["intent"] == "count" and answer.info["collection"]["documents_total"] == 3


def test_count_in_chinese_and_with_a_filter(services):
    answer = services.pipeline.answer("知识库里有多少篇文章？", KB)
    assert "共有 3 篇文档" in answer.answer and answer.info["language"] == "zh"
    from rag.retrieval import parse_filter

    answer = services.pipeline.answer("how many files are there?", KB, flt=parse_filter(["team=it"]))
    assert "holds 1 document:" in answer.answer and answer.sources[0].source == "security-policy.html"


def test_which_files_mention_a_term_cites_the_mentioning_chunk(services):
    answer = services.pipeline.answer("Which files mention the VPN?", KB)
    assert answer.answer.startswith("1 document mentions “VPN”: security-policy.html")
    assert answer.sources[0].chunk_id == "vpn" and answer.citations[0].chunk_id == "vpn"
    none = services.pipeline.answer("Which documents mention the cafeteria?", KB)
    assert none.answer == "No document in the knowledge base mentions “cafeteria”." and none.sources == []
    zh = services.pipeline.answer("哪些文件提到了年假", KB)
    assert zh.sources[0].chunk_id == "leave" and "有 1 篇文档提到了“年假”" in zh.answer


def test_when_was_a_document_updated(services):
    answer = services.pipeline.answer("When was the security policy last updated?", KB)
    assert answer.answer.startswith("security-policy.html was last modified on 2024-06-01 (UTC)")
    assert answer.citations[0].source_number == 1 and answer.sources[0].source == "security-policy.html"
    latest = services.pipeline.answer("Which document was most recently updated?", KB)
    assert "modified on 2024-06-01" in latest.answer


def test_updated_question_naming_no_document_goes_through_retrieval(services):
    answer = services.pipeline.answer("When was the warranty last updated?", KB)
    assert answer.model == "scripted-llm" and "collection" not in answer.info


def test_switch_off_per_request_and_by_setting(services, tmp_path):
    answer = services.pipeline.answer("How many documents are in the knowledge base?", KB,
                                       collection_questions=False)
    assert answer.model == "scripted-llm" and len(services.llm.calls) == 1
    other = build_services(tmp_path / "b", llm=ScriptedLLM(router(answer="No idea.")), collection_questions=False)
    register_docs(other)
    assert other.pipeline.answer("How many documents are in the knowledge base?", KB).model == "scripted-llm"


def test_streamed_catalog_answer_has_the_usual_events(services):
    events = list(services.pipeline.stream("List all documents", KB))
    assert [e["type"] for e in events] == ["retrieval", "token", "sources", "citations", "done"]
    assert events[1]["text"] == events[-1]["answer"]["answer"] and len(events[3]["citations"]) == 3


def test_api_query_answers_from_the_catalog(tmp_path):
    from fastapi.testclient import TestClient

    from tests.unit.api_helpers import ADMIN, make_app

    app, services = make_app(tmp_path, llm=ScriptedLLM(router(answer="x")))
    register_docs(services)
    with TestClient(app) as client:
        r = client.post("/v1/query", json={"question": "How many documents are in the knowledge base?", "kb": KB},
                        headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["info"]["collection"]["documents_total"] == 3 and r.json()["citations"][0]["supported"]
        body = {"model": KB, "messages": [{"role": "user", "content": "List all documents"}],
                "rag": {"collection_questions": False}}
        r = client.post("/v1/chat/completions", json=body, headers=ADMIN)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] != ""
