"""Chunkers: exact offsets, size bounds, overlap, Chinese separators, atomic table rows,
section boundaries, semantic splitting and Q&A chunks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.chunkers import Chunker, QAChunker, RecursiveChunker, SemanticChunker, make_chunker
from ingest.formats.builder import DocBuilder
from ingest.parse import parse_file
from rag.errors import ConfigError
from rag.testing import HashEmbedder
from rag.types import ChunkSpan, ParsedDocument
from tests.unit import fixtures_files as ff

EN_SENTENCES = [f"Sentence number {i} talks about widgets, batteries and the warranty of model X{i}." for i in range(40)]
ZH_SENTENCES = [f"第{i}条说明产品的保修期是自购买之日起两年，电池可以使用十个小时。" for i in range(30)]


def build(*items: tuple[str, str] | tuple[str, str, int]) -> ParsedDocument:
    """("title", text, depth) | (kind, text) items through the real DocBuilder."""
    builder = DocBuilder("txt")
    for item in items:
        if item[0] == "title":
            builder.heading(item[1], item[2] if len(item) > 2 else 0)
        else:
            builder.add(item[1], item[0])
    return builder.build("doc")


def check_spans(doc: ParsedDocument, spans: list[ChunkSpan], size: int) -> None:
    """Exact offsets, non-empty, within size, increasing, covering every non-blank character."""
    assert spans
    covered = [False] * len(doc.text)
    for span in spans:
        assert span.text.strip() and span.text == span.text.strip()
        assert doc.text[span.start : span.end] == span.text
        assert span.end - span.start <= size, (span.end - span.start, span.text)
        for i in range(span.start, span.end):
            covered[i] = True
    assert [s.start for s in spans] == sorted({s.start for s in spans})
    missing = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
    assert not missing, doc.text[missing[0] : missing[0] + 40]


# ---- recursive ---------------------------------------------------------------------------------
def test_recursive_english_sizes_and_overlap() -> None:
    doc = build(*[("text", " ".join(EN_SENTENCES[i : i + 5])) for i in range(0, 40, 5)])
    spans = RecursiveChunker(size=300, overlap=60).split(doc)
    check_spans(doc, spans, 300)
    assert len(spans) > 8
    for prev, nxt in zip(spans, spans[1:]):
        assert nxt.start < prev.end  # overlapping
        assert prev.end - nxt.start <= 60 + 30  # roughly `overlap`
        assert doc.text[nxt.start - 1] in " \n"  # starts on a word (here: sentence) boundary
    # chunks end at sentence or paragraph ends, not mid-sentence
    assert all(s.text.endswith(".") for s in spans)


def test_recursive_no_overlap_partitions_text() -> None:
    doc = build(*[("text", s) for s in EN_SENTENCES])
    spans = RecursiveChunker(size=250, overlap=0).split(doc)
    check_spans(doc, spans, 250)
    assert all(nxt.start > prev.end for prev, nxt in zip(spans, spans[1:]))


def test_recursive_chinese_separators() -> None:
    doc = build(("text", "".join(ZH_SENTENCES)))
    spans = RecursiveChunker(size=100, overlap=20).split(doc)
    check_spans(doc, spans, 100)
    for span in spans[:-1]:
        assert span.text[-1] in "。！？；，"
    for prev, nxt in zip(spans, spans[1:]):
        assert nxt.start < prev.end and doc.text[nxt.start - 1] in "。，"


def test_recursive_hard_cut_without_separators() -> None:
    doc = build(("text", "x" * 1000))
    spans = RecursiveChunker(size=300, overlap=50).split(doc)
    check_spans(doc, spans, 300)
    assert [len(s.text) for s in spans] == [300, 300, 300, 100]  # no mid-word overlap possible


def test_table_rows_are_never_cut() -> None:
    rows = [("table_row", f"model: X{i} | price: {i * 10} EUR | note: sturdy, light, blue") for i in range(30)]
    doc = build(("title", "Price list"), *rows)
    spans = RecursiveChunker(size=200, overlap=60).split(doc)
    check_spans(doc, spans, 200)
    for block in doc.blocks[1:]:
        for span in spans:
            assert span.end <= block.start or span.start >= block.end or (
                span.start <= block.start and block.end <= span.end)
    assert all(s.text.split("\n")[-1].startswith("model:") for s in spans)


def test_oversized_row_is_cut_at_separators() -> None:
    long_row = " | ".join(f"column {i}: value {i}" for i in range(40))
    doc = build(("table_row", long_row))
    spans = RecursiveChunker(size=120, overlap=0).split(doc)
    check_spans(doc, spans, 120)
    assert len(spans) > 1 and all(not s.text.endswith("valu") for s in spans)


def test_section_boundaries() -> None:
    body_a = " ".join(EN_SENTENCES[:3])  # about 250 characters: >= size/4
    body_b = " ".join(EN_SENTENCES[3:6])
    doc = build(("title", "Alpha"), ("text", body_a), ("title", "Beta", 1), ("text", body_b),
                ("title", "Gamma"), ("text", "Short."), ("title", "Delta"), ("text", "Also short."))
    spans = RecursiveChunker(size=800, overlap=100).split(doc)
    check_spans(doc, spans, 800)
    assert [s.text.split("\n")[0] for s in spans] == ["Alpha", "Beta", "Gamma"]
    assert spans[0].section_path == ("Alpha",)
    assert spans[1].section_path == ("Alpha", "Beta")
    assert "Delta" in spans[2].text  # small sections merge while the chunk is under size/4


def test_title_stays_with_following_text() -> None:
    paragraph = " ".join(EN_SENTENCES[:2])
    doc = build(("text", paragraph), ("text", paragraph[:150]), ("title", "Next part"), ("text", paragraph))
    spans = RecursiveChunker(size=330, overlap=0).split(doc)
    check_spans(doc, spans, 330)
    assert not any(s.text.endswith("Next part") for s in spans)
    assert any(s.text.startswith("Next part\n\n") for s in spans)


def test_document_without_blocks_and_subset_of_blocks() -> None:
    doc = ParsedDocument(text="  First paragraph.\n\nSecond paragraph.  ", title="t")
    spans = RecursiveChunker(size=100, overlap=10).split(doc)
    assert [s.text for s in spans] == ["First paragraph.\n\nSecond paragraph."]
    built = build(("text", "Keep me."), ("text", "Skip me."), ("text", "Keep me too."))
    chunker = RecursiveChunker(size=100, overlap=0)
    subset = chunker.split_blocks(built, [built.blocks[0], built.blocks[2]])
    assert [s.text for s in subset] == ["Keep me.", "Keep me too."]


def test_recursive_on_parsed_pdf_pages(tmp_path: Path) -> None:
    doc = parse_file(ff.write_pdf(tmp_path))
    spans = RecursiveChunker(size=120, overlap=30).split(doc)
    check_spans(doc, spans, 120)
    assert spans[0].page == 1 and spans[-1].page == 2
    assert spans[-1].section_path == ("2 Repairs",)


# ---- semantic ----------------------------------------------------------------------------------
CATS = ["Cats sleep on the sofa all day.", "Cats chase mice in the garden.", "Cats purr when the cats feel happy.",
        "Cats groom their fur with rough tongues.", "Cats hunt birds and mice at night."]
QUANTUM = ["Quantum computers use qubits for computation.", "Qubits hold superposition states in quantum computers.",
           "Quantum entanglement links qubits across quantum computers.",
           "Quantum error correction protects fragile qubits.", "Quantum algorithms factor numbers with qubits."]


def test_semantic_splits_between_topics() -> None:
    doc = build(("text", " ".join(CATS + QUANTUM)))
    embedder = HashEmbedder(dim=256)
    spans = SemanticChunker(embedder, percentile=80.0, max_size=1000, min_size=20).split(doc)
    check_spans(doc, spans, 1000)
    assert embedder.calls == [10]  # one batch for the whole document
    for span in spans:
        assert not ("Cats" in span.text and "Quantum" in span.text), span.text
    assert "".join(s.text for s in spans).replace(" ", "") == doc.text.replace(" ", "")


def test_semantic_respects_max_size_min_size_and_sections() -> None:
    doc = build(("title", "Pets"), ("text", " ".join(CATS * 3)), ("title", "Physics"), ("text", " ".join(QUANTUM)),
                ("title", "Tiny"), ("text", "Hi."))
    spans = SemanticChunker(HashEmbedder(), percentile=50.0, max_size=200, min_size=60).split(doc)
    check_spans(doc, spans, 200)
    for span in spans:
        assert not ("Cats" in span.text and "Quantum" in span.text)
    assert spans[-1].text == "Tiny\n\nHi." and spans[-1].section_path == ("Tiny",)  # never merged across
    pets = [s for s in spans if s.section_path == ("Pets",)]
    assert all(len(s.text) >= 60 for s in pets)
    assert pets[0].text.startswith("Pets\n\nCats")  # the title starts its section's first chunk


def test_semantic_cuts_a_huge_sentence() -> None:
    doc = build(("text", "word " * 200 + "end."))
    spans = SemanticChunker(HashEmbedder(), max_size=150, min_size=10).split(doc)
    check_spans(doc, spans, 150)


# ---- QA ----------------------------------------------------------------------------------------
def test_qa_chunker_one_chunk_per_pair(tmp_path: Path) -> None:
    doc = parse_file(ff.write_csv_qa(tmp_path))
    spans = QAChunker(RecursiveChunker(200, 20)).split(doc)
    assert [s.kind for s in spans] == ["qa"] * 3
    assert [s.embed_text for s in spans] == [q for q, _ in ff.QA_ROWS]
    assert spans[2].text == "Q: 保修期是多久？\nA: 自购买之日起两年。"
    assert [(s.start, s.end) for s in spans] == [(p.start, p.end) for p in doc.qa_pairs]


def test_qa_chunker_chunks_the_rest_with_fallback(tmp_path: Path) -> None:
    doc = parse_file(ff.write_xlsx(tmp_path))
    spans = QAChunker(RecursiveChunker(500, 50)).split(doc)
    assert [s.kind for s in spans] == ["qa", "qa", "qa", "text"]
    assert spans[-1].section_path == ("Prices",) and spans[-1].text.startswith("Model: X200")
    assert spans[-1].embed_text is None


def test_qa_chunker_without_pairs_uses_fallback() -> None:
    doc = build(*[("text", s) for s in EN_SENTENCES[:10]])
    fallback = RecursiveChunker(200, 20)
    assert QAChunker(fallback).split(doc) == fallback.split(doc)


# ---- factory -----------------------------------------------------------------------------------
def test_make_chunker() -> None:
    recursive = make_chunker("recursive", size=500, overlap=50)  # every chunker keeps Q&A pairs whole
    assert isinstance(recursive, QAChunker) and isinstance(recursive, Chunker)
    assert isinstance(recursive.fallback, RecursiveChunker) and recursive.fallback.size == 500
    assert make_chunker("QA", size=500, overlap=50).signature == recursive.signature
    semantic = make_chunker("semantic", size=500, overlap=50, embedder=HashEmbedder(), percentile=85.0)
    assert isinstance(semantic, QAChunker) and isinstance(semantic.fallback, SemanticChunker)
    assert semantic.fallback.max_size == 500 and semantic.fallback.percentile == 85.0
    signatures = {recursive.signature, make_chunker("recursive", size=500, overlap=60).signature, semantic.signature}
    assert len(signatures) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "fancy"}, "unknown chunker"),
    ({"name": "semantic"}, "needs an embedder"),
    ({"name": "recursive", "size": 100, "overlap": 100}, "overlap"),
    ({"name": "recursive", "size": 0, "overlap": 0}, "size"),
])
def test_make_chunker_errors(kwargs: dict, message: str) -> None:
    kwargs = {"size": 800, "overlap": 120, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_chunker(**kwargs)
