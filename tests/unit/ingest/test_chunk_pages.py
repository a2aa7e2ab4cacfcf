"""A chunk over a page break records every page it covers, and a citation names the page its
supporting sentence is on (issue 35): scanned PDFs through the real bundled OCR model, text PDFs
through pypdf, both chunked into one chunk that spans pages 1 and 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from eval.ocr_samples import latin_font, render_text
from ingest.chunkers import RecursiveChunker
from ingest.service import build_ingestor
from rag.adapters.llm_fake import ScriptedLLM
from rag.adapters.qdrant_store import QdrantClientStore
from rag.factory import Services
from rag.pages import cited_page, page_at, page_starts
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.types import Block, Chunk, ParsedDocument
from tests.unit.api_helpers import ADMIN, ADMIN_KEY
from tests.unit.kb_fixtures import router

PAGE_1 = "The pump warranty lasts two years from the date of purchase."
PAGE_2 = "Fixed assets are counted every December by the finance team."
ANSWER = "Fixed assets are counted every December [1]."


def test_page_at_and_cited_page() -> None:
    pages = ((1, 0), (2, 40))
    assert [page_at(pages, o) for o in (0, 39, 40, 99)] == [1, 1, 2, 2]
    assert page_at((), 5) is None
    text = PAGE_1 + "\n\n" + PAGE_2
    pages = ((1, 0), (2, len(PAGE_1) + 2))
    assert cited_page(text, pages, "Assets are counted in December.", 1) == 2
    assert cited_page(text, pages, "The warranty lasts two years.", 1) == 1
    assert cited_page(text, pages, "Nothing in common here.", 1) == 1  # no match: the chunk's page
    assert cited_page(PAGE_2, ((3, 0),), "Assets are counted.", 3) == 3


def test_page_starts_skip_unpaged_blocks_and_repeat_pages() -> None:
    spans = [(0, 10, 1), (12, 20, 1), (22, 30, None), (32, 40, 2), (42, 50, 3)]
    assert page_starts(spans, 5, 45) == ((1, 0), (2, 27), (3, 37))
    assert page_starts(spans, 33, 40) == ((2, 0),)


def test_recursive_chunk_over_a_page_break_keeps_both_pages() -> None:
    text = PAGE_1 + "\n\n" + PAGE_2
    second = len(PAGE_1) + 2
    doc = ParsedDocument(text, "t", [Block(0, len(PAGE_1), "text", page=1), Block(second, len(text), "text", page=2)])
    [span] = RecursiveChunker(size=800, overlap=0).split(doc)
    assert span.page == 1 and span.pages == ((1, 0), (2, second))
    spans = RecursiveChunker(size=70, overlap=0).split(doc)  # one chunk per page
    assert [(s.page, s.pages) for s in spans] == [(1, ((1, 0),)), (2, ((2, 0),))]


def test_chunk_payload_round_trips_pages_and_old_payloads_still_load() -> None:
    chunk = Chunk(id="c", kb="k", doc_id="d", source="s.pdf", text="x", start=0, end=1, page=1,
                  pages=((1, 0), (2, 40)))
    assert Chunk.from_payload(chunk.payload()).pages == ((1, 0), (2, 40))
    old = chunk.payload()
    del old["pages"]  # stored before pages were recorded
    assert Chunk.from_payload(old).pages == ((1, 0),)
    old["page"] = None
    assert Chunk.from_payload(old).pages == ()


def _scanned_pdf(folder: Path) -> Path:
    """An image-only two-page PDF: one sentence per page, no text layer."""
    pages = [render_text(t, latin_font(), 150).convert("RGB") for t in (PAGE_1, PAGE_2)]
    path = folder / "scan.pdf"
    pages[0].save(path, "PDF", resolution=150, save_all=True, append_images=pages[1:])
    return path


def _text_pdf(folder: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in (PAGE_1, PAGE_2):
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    path = folder / "text.pdf"
    pdf.output(str(path))
    return path


@pytest.mark.parametrize("make_pdf", [_scanned_pdf, _text_pdf], ids=["scanned", "text"])
def test_citation_names_the_page_of_its_sentence(tmp_path: Path, make_pdf) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs)
    config = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="local", lexical_backend="local",
                      api_admin_key=ADMIN_KEY, default_kb="manuals", ocr="auto")
    services = Services(config, embedder=HashEmbedder(dim=64), llm=ScriptedLLM(router(answer=ANSWER)),
                        reranker=None, store=QdrantClientStore.memory())
    report = build_ingestor(services, "manuals").ingest_folder(docs)
    assert report.count("indexed") == 1, report.as_dict()
    body = TestClient(create_app(services)).post("/v1/query", json={"question": "When are fixed assets counted?"},
                                                 headers=ADMIN).json()
    [source] = body["sources"]
    assert source["pages"] == [1, 2] and "two years" in source["text"], source  # one chunk over both pages
    [citation] = body["citations"]
    assert citation["page"] == 2 and source["page"] == 2, body
    assert body["answer"] == body["answer_with_citations"] == ANSWER  # both in the API's JSON
