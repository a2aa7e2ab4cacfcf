"""Prompt building and context packing: numbered sources, token budget, most relevant first,
never a chunk cut mid-sentence; JSON-ready results."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from rag import prompts
from rag.errors import ConfigError
from rag.generation import (Layout, build_messages, context_budget, estimate_tokens, heading, pack_context, source_block,
                            sources_from_hits)
from rag.serialize import answer_to_dict, snippet
from rag.text import split_sentences
from rag.types import Answer, Chunk, Citation, Hit, ListHit


def hit(cid: str, text: str, score: float = 0.03, **kw) -> Hit:
    chunk = Chunk(cid, "kb", f"doc-{cid}", f"{cid}.md", text, 100, 100 + len(text), title=kw.pop("title", "Doc"), **kw)
    return Hit(chunk, score, [ListHit("dense", "original", 1, 0.9)])


SENTENCES = " ".join(f"Sentence number {i} talks about the warranty rules of product {i}." for i in range(40))


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 35) == 10
    assert estimate_tokens("员工年假") == 4
    assert estimate_tokens("X200 的保修期") == 4 + 2  # 4 CJK + ceil(5 / 3.5)


def test_prompt_numbers_sources_with_heading_and_page():
    hits = [hit("a", "The warranty lasts two years.", section_path=("Warranty",), page=12),
            hit("b", "员工每年享有十五天带薪年假。", title="员工休假制度", section_path=("年假",))]
    packed = pack_context(hits, budget=1000, max_sources=5)
    messages = build_messages("How long is the warranty?", packed.sources, "en")
    assert messages[0] == {"role": "system", "content": prompts.ANSWER_SYSTEM["en"]}
    # one worked example (a user turn and a cited answer) before the real question
    example_sources, example_question, example_answer = prompts.ANSWER_EXAMPLE["en"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert example_sources in messages[1]["content"] and example_question in messages[1]["content"]
    assert messages[2]["content"] == example_answer and "[2]" in example_answer
    user = messages[3]["content"]
    assert "[1] Doc · Warranty · page 12\nThe warranty lasts two years." in user
    assert "[2] 员工休假制度 · 年假\n员工每年享有十五天带薪年假。" in user
    assert user.index("[1]") < user.index("[2]") < user.index("Question: How long is the warranty?")
    assert prompts.REFUSAL["en"] in messages[0]["content"] and "[2]" in messages[0]["content"]
    zh = build_messages("年假有几天？", packed.sources, "zh")
    assert zh[0]["content"] == prompts.ANSWER_SYSTEM["zh"] and "问题： 年假有几天？" in zh[3]["content"]
    assert prompts.REFUSAL["zh"] in zh[0]["content"] and "中文" in zh[0]["content"]
    assert "访客" in zh[1]["content"] and zh[2]["content"] == prompts.ANSWER_EXAMPLE["zh"][2]


def test_the_worked_example_keeps_its_order_and_its_answer_cites_the_source_listed_last():
    packed = pack_context([hit("a", "The warranty lasts two years.")], budget=1000, max_sources=5)
    for lang in ("en", "zh"):
        sources, question, answer = prompts.ANSWER_EXAMPLE[lang]
        listed = [int(n) for n in re.findall(r"^\[(\d+)\] ", sources, flags=re.M)]
        cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
        assert sorted(listed) == [1, 2] and cited == {listed[-1]}  # next to the question, as [1] is best last
        for layout in (Layout(), Layout(best_last=True)):  # its own order in both
            messages = build_messages("How long?", packed.sources, lang, layout)
            assert sources in messages[1]["content"] and question in messages[1]["content"]
            assert messages[2]["content"] == answer


def test_the_default_answer_prompt_is_byte_identical_to_the_one_measured():
    """The default layout (the best source last, the plain worked example, cited sentences) pinned
    by its hash: removing the answer switches (issue 32) had to leave it unchanged to the byte,
    and any later change of the default prompt is a lever to measure (docs/benchmarks.md)."""
    hits = [hit("a", "The warranty lasts two years.", section_path=("Warranty",), page=12),
            hit("b", "员工每年享有十五天带薪年假。", title="员工休假制度", section_path=("年假",))]
    packed = pack_context(hits, budget=1000, max_sources=5)
    prompts_ = [build_messages(q, packed.sources, lang, Layout(best_last=True))
                for q, lang in (("How long is the warranty?", "en"), ("年假有几天？", "zh"))]
    digest = hashlib.sha256(json.dumps(prompts_, ensure_ascii=False).encode()).hexdigest()
    assert digest == "69c9f65d3fb051ca97df5080aaa3ffa4d8103556f1cd225953743b49f3d1ebe5"


def test_question_first_states_the_question_before_the_sources_too(tmp_path):
    packed = pack_context([hit("a", "The warranty lasts two years.")], budget=1000, max_sources=5)
    messages = build_messages("How long is the warranty?", packed.sources, "en", Layout(question_first=True))
    for turn in (messages[1]["content"], messages[3]["content"]):  # the worked example is laid out alike
        assert turn.startswith("Question: ") and turn.count("Question: ") == 2 and turn.index("Sources:") > 0
    assert messages[3]["content"].startswith("Question: How long is the warranty?\n\nSources:")
    assert build_messages("How long is the warranty?", packed.sources, "en")[3]["content"].startswith("Sources:")
    from rag.adapters.llm_fake import ScriptedLLM
    from tests.unit.kb_fixtures import KB, build_services, router

    llm = ScriptedLLM(router(answer="The warranty lasts two years [1]."))
    build_services(tmp_path, llm=llm, question_first=True).pipeline.answer("How long is the Acme X200 warranty?", KB)
    assert llm.last_messages[-1]["content"].startswith("Question: How long is the Acme X200 warranty?")


def test_best_last_lists_the_sources_from_the_last_number_to_the_first(tmp_path):
    hits = [hit("a", "The warranty lasts two years."), hit("b", "Returns are accepted within 30 days."),
            hit("c", "Shipping is free over 50 euros.")]
    packed = pack_context(hits, budget=1000, max_sources=5)
    user = build_messages("How long is the warranty?", packed.sources, "en", Layout(best_last=True))[3]["content"]
    # the numbers stay the ranks; the best source stands right before the question
    assert user.index("[3] Doc") < user.index("[2] Doc") < user.index("[1] Doc\nThe warranty lasts two years.")
    assert user.index("[1] Doc") < user.index("Question: How long is the warranty?")
    from rag.adapters.llm_fake import ScriptedLLM
    from tests.unit.kb_fixtures import KB, build_services, router

    llm = ScriptedLLM(router(answer="The warranty lasts two years [1]."))
    answer = build_services(tmp_path, llm=llm, context_best_last=True).pipeline.answer(
        "How long is the Acme X200 warranty?", KB)
    last = llm.last_messages[-1]["content"]
    numbers = [int(n) for n in re.findall(r"^\[(\d+)\] ", last, flags=re.M)]
    assert len(numbers) > 1 and numbers == sorted(numbers, reverse=True)
    assert not answer.refused and answer.citations and answer.citations[0].source_number == 1


def test_heading_falls_back_to_file_name():
    chunk = Chunk("x", "kb", "d", "notes/a.txt", "t", 0, 1, page=3)
    assert heading(chunk) == "notes/a.txt · page 3"
    assert heading(chunk, "zh") == "notes/a.txt · 第 3 页"


def test_packing_respects_budget_order_and_sentence_ends():
    hits = [hit("a", "Short first source about warranty."), hit("b", SENTENCES), hit("c", "Never reached.")]
    budget = 150
    packed = pack_context(hits, budget=budget, max_sources=5)
    assert packed.used <= budget
    assert [s.chunk_id for s in packed.sources][:2] == ["a", "b"]
    trimmed = packed.sources[1]
    assert packed.trimmed == [2] and len(trimmed.text) < len(SENTENCES)
    assert SENTENCES.startswith(trimmed.text) and trimmed.text.endswith(".")
    ends = {e for _, e in split_sentences(SENTENCES)}
    assert len(trimmed.text) in ends  # cut exactly at a sentence end
    assert trimmed.end == trimmed.start + len(trimmed.text)  # the cited span shrinks with it
    used = sum(estimate_tokens(source_block(s.number, hits[i].chunk, s.text, "en")) + 2
               for i, s in enumerate(packed.sources))
    assert used == packed.used


def test_a_source_whose_first_sentence_cannot_fit_is_left_out():
    long_sentence = "word " * 400 + "end."
    hits = [hit("a", long_sentence), hit("b", "A short source that fits.")]
    packed = pack_context(hits, budget=100, max_sources=5)
    assert [s.chunk_id for s in packed.sources] == ["b"] and packed.sources[0].number == 1
    assert packed.left_out == 1


def test_max_sources_and_chinese_budget():
    hits = [hit(str(i), "员工每年享有十五天带薪年假。" * 3, title="制度") for i in range(8)]
    packed = pack_context(hits, budget=10_000, max_sources=3, lang="zh")
    assert len(packed.sources) == 3 and packed.left_out == 5
    tight = pack_context(hits, budget=120, max_sources=8, lang="zh")
    assert tight.used <= 120 and 1 <= len(tight.sources) < 8


def test_context_budget_and_too_small_window():
    budget = context_budget(4096, 384, "How long is the warranty?", "en")
    assert 3000 < budget < 4096 - 384
    with pytest.raises(ConfigError, match="llm_context_window"):
        context_budget(512, 480, "question", "en")


def test_answer_to_dict_is_json_ready():
    hits = [hit("a", "The warranty lasts two years.", page=2)]
    sources = sources_from_hits(hits)
    citation = Citation(1, "It lasts two years.", 0, 23, 1, "a", support=0.9, supported=True)
    answer = Answer("q", "It lasts two years [1].", sources=sources, citations=[citation], hits=hits,
                    timings={"dense": 0.0012345678}, info={"language": "en"})
    data = json.loads(json.dumps(answer_to_dict(answer)))
    assert data["sources"][0]["cited"] is True and data["sources"][0]["document"] == "a.md"
    assert data["citations"][0]["page"] == 2 and data["citations"][0]["supported"] is True
    assert data["hits"][0]["provenance"] == [{"list": "dense", "variant": "original", "rank": 1, "score": 0.9}]
    assert data["timings"]["dense"] == 0.001235


def test_snippet_cuts_at_sentence_or_word():
    assert snippet("Short.") == "Short."
    long = "First sentence is here. " * 20
    assert snippet(long, 100).endswith("here.") and len(snippet(long, 100)) <= 100
    assert snippet("word " * 100, 50).endswith("…")
