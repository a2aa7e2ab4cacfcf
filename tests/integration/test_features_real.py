"""Issue 17 features with the real bundled models (multilingual-e5-small + the embedded Qwen2.5
0.5B GGUF): a map_reduce answer whose citations survive both steps, a question about the collection
answered from the catalog, and the newest of two ingested versions of a policy. Slow."""

from __future__ import annotations

import pytest

from ingest.service import build_ingestor
from rag.serialize import answer_to_dict
from tests.unit.kb_fixtures import KB, build_services
from tests.unit.rag.test_collection import register_docs
from tests.unit.rag.test_versions import NEW, OLD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from rag.adapters.embedders import resolve_embedder
    from rag.adapters.llm import make_llm

    embedder = resolve_embedder("e5").embedder
    llm = make_llm(None, n_ctx=2048)
    services = build_services(tmp_path_factory.mktemp("features"), backend="edge", embedder=embedder, llm=llm,
                              llm_context_window=2048, llm_max_tokens=160, context_top_n=3,
                              strategy_group_sources=1, strategy_parallel=1)
    register_docs(services)
    yield services
    services.close()


def test_map_reduce_with_the_real_model_keeps_verified_citations(services):
    answer = services.pipeline.answer("How long is the Acme X200 warranty?", KB, strategy="map_reduce", limit=2)
    data = answer_to_dict(answer)
    assert answer.info["strategy"]["name"] == "map_reduce" and answer.info["strategy"]["map_calls"] == 2
    assert not answer.refused, data
    assert "two years" in answer.answer.lower() or "2 years" in answer.answer.lower(), answer.answer
    assert any(c.chunk_id == "warranty" and c.supported for c in answer.citations), data["citations"]


def test_collection_question_is_answered_from_the_catalog(services):
    answer = services.pipeline.answer("How many documents are in the knowledge base?", KB)
    assert answer.model == "catalog" and "holds 3 documents" in answer.answer
    zh = services.pipeline.answer("知识库里有多少篇文章？", KB)
    assert "共有 3 篇文档" in zh.answer


def test_the_newest_version_answers(services, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "Attendance policy 2023.md").write_text(OLD, encoding="utf-8")
    (docs / "Attendance policy 2024.md").write_text(NEW, encoding="utf-8")
    build_ingestor(services, "hr").ingest_folder(docs)
    answer = services.pipeline.answer("How many days per week may staff work from home?", "hr")
    assert answer.info["versions"][0]["used"] == ["Attendance policy 2024.md"], answer.info
    assert {s.source for s in answer.sources} == {"Attendance policy 2024.md"}
    assert "three" in answer.answer.lower() or "3" in answer.answer, answer.answer
    assert "Version used: Attendance policy 2024.md" in answer.answer
