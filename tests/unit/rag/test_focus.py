"""What the model reads (rag/focus.py): near-duplicates collapsed, the question's year first,
each passage cut to its whole sentences around the question's terms with exact offsets."""

from __future__ import annotations

from rag.focus import (best_window, dedupe, focus_hits, mismatch, numbers_in, order_by_markers, prepare_context,
                       question_markers)
from rag.generation import estimate_tokens
from rag.types import Chunk, Hit, ListHit


def hit(cid: str, text: str, doc: str | None = None, start: int = 100, kind: str = "text") -> Hit:
    chunk = Chunk(cid, "kb", doc or f"doc-{cid}", f"{cid}.md", text, start, start + len(text), title="Doc", kind=kind)
    return Hit(chunk, 0.03, [ListHit("dense", "original", 1, 0.9)])


FILLER = " ".join(f"Paragraph {i} describes the history of the award ceremony in general terms." for i in range(12))
PASSAGE = (FILLER + " The Maxwell Award of 2019 went to Joe Burrow of LSU. He threw for 5,671 yards that season. "
           + FILLER)


def test_markers_of_years_and_editions_in_english_and_chinese():
    m = question_markers("Who is the Maxwell Award winner in 2019?")
    assert m.years == {"2019"} and not m.editions
    assert question_markers("Who hosted the 53rd Grammy Awards?").editions == {"53"}
    assert question_markers("第五十三届格莱美奖在哪里举行？").editions == {"53"}
    assert question_markers("第53届格莱美奖在哪里举行？").editions == {"53"}
    assert question_markers("2018年超级碗冠军是谁").years == {"2018"}
    assert not question_markers("What is the incubation period?")


def test_mismatch_says_whether_a_text_states_only_other_years():
    q = question_markers("Who won in 2019?")
    assert mismatch(q, "In 2018 the prize went to Smith.") is True
    assert mismatch(q, "The 2019 prize went to Burrow; in 2018 it went to Smith.") is False
    assert mismatch(q, "The prize went to Burrow.") is None
    assert mismatch(question_markers("Who won?"), "In 2018 ...") is None


def test_passages_stating_the_question_year_go_first_other_years_last():
    hits = [hit("a", "The 2018 Maxwell Award went to Tua."), hit("b", "The award honours the best player."),
            hit("c", "In 2019 the Maxwell Award went to Joe Burrow.")]
    ordered, moved = order_by_markers(hits, question_markers("Who won the Maxwell Award in 2019?"))
    assert [h.chunk.id for h in ordered] == ["c", "b", "a"] and moved == 1
    same, moved = order_by_markers(hits, question_markers("Who won the Maxwell Award?"))
    assert same == hits and moved == 0


def test_dedupe_drops_repeats_and_overlapping_chunks_of_one_document_but_keeps_versions():
    text = "Staff may work from home two days per week. Requests go to the line manager."
    hits = [hit("a", text), hit("copy", "  " + text.upper() + " "), hit("overlap", text[:60], doc="doc-a"),
            hit("v2024", text.replace("two", "three"))]
    kept, dropped = dedupe(hits)
    assert [h.chunk.id for h in kept] == ["a", "v2024"] and dropped == 2


def test_best_window_holds_the_question_terms_in_whole_sentences():
    weights = {"maxwel": 3.0, "award": 1.0, "2019": 4.0}  # stems, as tokenize gives them
    start, end = best_window(PASSAGE, weights, 60, estimate_tokens)
    window = PASSAGE[start:end]
    assert "The Maxwell Award of 2019 went to Joe Burrow of LSU." in window
    assert "5,671 yards" in window  # the budget is filled with the following sentence(s)
    assert estimate_tokens(window) <= 60 + 2 and window == window.strip()
    assert window.endswith(".") and PASSAGE[start - 1] == " "  # starts and ends at sentence boundaries
    assert best_window("Short text.", weights, 60, estimate_tokens) == (0, len("Short text."))


def test_focus_cuts_long_chunks_and_keeps_exact_offsets():
    long = hit("long", PASSAGE, start=1000)
    qa = hit("qa", PASSAGE, kind="qa")
    short = hit("short", "The Maxwell Award is given every year.")
    out, cut = focus_hits("Who won the Maxwell Award in 2019?", [long, qa, short], 80, estimate_tokens)
    assert cut == 1 and out[1] is qa and out[2] is short
    chunk = out[0].chunk
    assert "Joe Burrow" in chunk.text and len(chunk.text) < len(PASSAGE) / 3
    assert PASSAGE[chunk.start - 1000: chunk.end - 1000] == chunk.text  # the span follows the cut


def test_prepare_context_reports_what_it_changed_and_each_step_switches_off():
    hits = [hit("a", "The 2018 award went to Tua."), hit("a2", "The 2018 award went to Tua."),
            hit("b", "In 2019 the award went to Burrow.")]
    out, info = prepare_context("Who won the award in 2019?", hits, dedupe_on=True, match_years=True,
                                focus_on=True, focus_tokens=160, estimate=estimate_tokens)
    assert [h.chunk.id for h in out] == ["b", "a"]
    assert info == {"duplicates_dropped": 1, "other_year_moved_back": 1}
    out, info = prepare_context("Who won the award in 2019?", hits, dedupe_on=False, match_years=False,
                                focus_on=False, focus_tokens=160, estimate=estimate_tokens)
    assert out == hits and info == {}


def test_numbers_in_drops_thousands_separators():
    assert numbers_in("It had 1,313,851 cases and a 2.5 % rate in 2020.") == {"1313851", "2.5", "2020"}


def test_figures_are_canonical_across_digits_words_and_chinese_numerals():
    from rag.focus import figures

    assert figures("It lasts two years and 05 days, 2.50 mg, 1,313 cases.") == {"2", "5", "2.5", "1313"}
    assert figures("员工享有十五天带薪年假，试用期两个月。") == {"15", "2"}
    assert figures("一个 统一 one of them") == set()


def test_summary_list_and_comparison_questions_read_passages_whole():
    from rag.focus import asks_for_overview

    long = hit("long", PASSAGE)
    for question in ("Summarise the award's history.", "List every Maxwell Award winner.", "总结员工休假制度。",
                     "年假有哪些规定？", "Compare the 2018 and 2019 awards."):
        assert asks_for_overview(question)
        out, info = prepare_context(question, [long], dedupe_on=True, match_years=False, focus_on=True,
                                    focus_tokens=60, estimate=estimate_tokens)
        assert out[0].chunk.text == PASSAGE and "focused" not in info
    assert not asks_for_overview("Who won the Maxwell Award in 2019?")
