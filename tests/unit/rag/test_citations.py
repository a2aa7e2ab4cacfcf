"""Citation markers: parsing, normalising, removing invalid numbers (also across streamed
deltas), sentence attribution, mapping to sources and verification."""

from __future__ import annotations

import random

import pytest

from rag.citations import (CitationVerifier, MarkerFilter, answer_sentences, clean_answer, extract_citations,
                           marker_numbers, strip_markers, uncited_sentences)
from rag.testing import HashEmbedder
from rag.types import Citation, Source


def source(number: int, text: str, chunk_id: str | None = None) -> Source:
    return Source(number=number, chunk_id=chunk_id or f"c{number}", doc_id="d", source="doc.md", title="Doc",
                  section_path=("S",), page=None, start=0, end=len(text), text=text, score=0.1)


@pytest.mark.parametrize("body,numbers", [
    ("1", [1]), ("1, 2", [1, 2]), ("1，2、3", [1, 2, 3]), ("source 2", [2]), ("Sources 1, 3", [1, 3]),
    ("来源1", [1]), ("1-3", [1, 2, 3]), ("^2", [2]), ("2,2", [2]), ("note", None), ("1a", None), ("", None),
])
def test_marker_numbers(body, numbers):
    assert marker_numbers(body) == numbers


@pytest.mark.parametrize("raw,n,clean,invalid", [
    ("Two years [1].", 2, "Two years [1].", []),
    ("Two years [1, 2].", 2, "Two years [1][2].", []),
    ("Two years [1][3].", 3, "Two years [1][3].", []),
    ("两年【1】。", 1, "两年[1]。", []),
    ("Two years [source 2].", 2, "Two years [2].", []),
    ("Two years [7].", 2, "Two years.", [7]),
    ("Two years [1, 7].", 2, "Two years [1].", [7]),
    ("Two years [7][1].", 2, "Two years [1].", [7]),
    ("It [9] lasts two years.", 2, "It lasts two years.", [9]),
    ("See [note] and [2023].", 2, "See [note] and [2023].", []),
    ("  Padded answer [1]  \n", 1, "Padded answer [1]", []),
    ("Line one [5]\n\nLine two [1]", 1, "Line one\n\nLine two [1]", [5]),
    ("Unclosed [1", 1, "Unclosed [1", []),
])
def test_clean_answer(raw, n, clean, invalid):
    assert clean_answer(raw, n) == (clean, invalid)


def test_filter_output_does_not_depend_on_how_the_stream_is_split():
    raw = ("The warranty lasts two years [1]. It covers defects [1, 4]【2】 but not water [9]. 员工有十五天年假【3】。"
           " See [note]. Done [2][8].")
    expected = clean_answer(raw, 3)[0]
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, 30)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
        f = MarkerFilter(3)
        assert "".join(f.feed(p) for p in pieces) + f.flush() == expected
        assert f.invalid == [4, 9, 8]


def test_sentence_attribution_handles_markers_after_the_full_stop():
    text = "The warranty lasts two years. [1] It covers defects.[2] Water damage is excluded [1][2]. No marker here."
    sentences = answer_sentences(text)
    assert [(s.text, s.numbers) for s in sentences] == [
        ("The warranty lasts two years.", [1]), ("It covers defects.", [2]),
        ("Water damage is excluded.", [1, 2]), ("No marker here.", [])]
    assert text[sentences[0].start:sentences[0].end] == "The warranty lasts two years. [1]"
    assert text[sentences[2].start:sentences[2].end] == "Water damage is excluded [1][2]."


def test_extract_citations_maps_to_sources():
    sources = [source(1, "The warranty lasts two years."), source(2, "Water damage is not covered.", "water")]
    answer = "It lasts two years [1]. Water is excluded [2][1]. 员工有十五天年假[2]。"
    citations = extract_citations(answer, sources)
    assert [(c.number, c.source_number, c.chunk_id) for c in citations] == [
        (1, 1, "c1"), (2, 2, "water"), (1, 1, "c1"), (2, 2, "water")]
    assert citations[0].sentence == "It lasts two years."
    assert answer[citations[1].sentence_start:citations[1].sentence_end] == "Water is excluded [2][1]."
    assert citations[3].sentence == "员工有十五天年假。"


def test_uncited_sentences_and_strip_markers():
    answer = "Short. This sentence has no citation at all. This one does [1]."
    assert uncited_sentences(answer) == ["This sentence has no citation at all."]
    assert strip_markers("Two years [1][2].") == "Two years."


def test_verification_marks_supported_and_unsupported_in_one_encode_call():
    embedder = HashEmbedder(dim=128)
    sources = [source(1, "The Acme X200 warranty lasts two years from the date of purchase. It covers "
                         "manufacturing defects. Water damage is not covered."),
               source(2, "Passwords must have at least twelve characters.")]
    answer = ("The warranty lasts two years from purchase [1]. Passwords need twelve characters [2]. "
              "The moon is made of cheese [1].")
    citations = extract_citations(answer, sources)
    info = CitationVerifier(embedder, min_support=0.5).verify(citations, sources)
    assert [c.supported for c in citations] == [True, True, False]
    assert all(0.0 <= c.support <= 1.0 for c in citations)
    assert citations[0].support > 0.7 and citations[2].support < 0.3
    assert info["checked"] == 3 and info["supported"] == 2 and info["method"] == "embedding+lexical"
    assert embedder.calls and len(embedder.calls) == 1  # sentences, windows (and calibration) in one batch
    CitationVerifier(embedder).verify(extract_citations(answer, sources), sources)
    assert len(embedder.calls) == 2  # the calibration is cached per embedder


def test_a_number_missing_from_the_source_lowers_support():
    sources = [source(1, "The warranty lasts 2 years from the date of purchase.")]
    right = extract_citations("The warranty lasts 2 years from the date of purchase [1].", sources)
    wrong = extract_citations("The warranty lasts 5 years from the date of purchase [1].", sources)
    verifier = CitationVerifier(HashEmbedder(dim=128))
    verifier.verify(right, sources)
    verifier.verify(wrong, sources)
    assert right[0].supported and not wrong[0].supported
    assert wrong[0].support < right[0].support * 0.6


def test_a_number_written_in_another_form_is_not_missing():
    # the same canonical figures as the answer check: "15.0%" = "15%", "two" = "2", "1,313" = "1313"
    sources = [source(1, "An estimated 15% of the population, 1,313 people in all, was infected within 2 weeks.")]
    forms = extract_citations("About 15.0% of the population, 1313 people, was infected within two weeks [1].",
                              sources)
    other = extract_citations("About 25.0% of the population, 1413 people, was infected within two weeks [1].",
                              sources)
    verifier = CitationVerifier(HashEmbedder(dim=128))
    verifier.verify(forms, sources)
    verifier.verify(other, sources)
    assert forms[0].supported and forms[0].support > other[0].support * 1.6


def test_lexical_only_verification_without_an_embedder():
    sources = [source(1, "员工每年享有十五天带薪年假。")]
    citations = extract_citations("员工每年有十五天带薪年假[1]。月球是奶酪做的[1]。", sources)
    info = CitationVerifier(None).verify(citations, sources)
    assert info["method"] == "lexical"
    assert [c.supported for c in citations] == [True, False]


def test_attributed_citations_are_marked_for_display():
    from rag.citations import mark_attributed

    text = "The warranty lasts two years. It covers defects [1]. 年假有十天。"
    first = text.index("It")
    zh = text.index("年")
    citations = [Citation(2, "The warranty lasts two years.", 0, 29, 2, "w", origin="attributed"),
                 Citation(1, "It covers defects", first, zh - 1, 1, "d"),  # the model's own marker
                 Citation(1, "It covers defects", first, zh - 1, 1, "d", origin="attributed"),
                 Citation(3, "年假有十天。", zh, len(text), 3, "l", origin="attributed")]
    assert mark_attributed(text, citations) == "The warranty lasts two years [2]. It covers defects [1]. 年假有十天 [3]。"
    assert mark_attributed(text, citations[1:2]) == text  # nothing attributed: unchanged
