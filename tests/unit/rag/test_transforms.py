"""Query transforms and multi-turn condensing with a scripted LLM: the prompts sent, how the
replies are used, and graceful degradation when the LLM fails."""

from __future__ import annotations

import logging

import pytest

from rag import prompts
from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import LLMError
from rag.transforms import (Condensed, QueryTransformer, TransformLog, clean_line, conversation_query,
                            question_language, rewrite_problem)
from tests.unit.kb_fixtures import KB, OverlapReranker, build_services, kind_of, router


def expand(llm, question, names, lang="en", **kw):
    tlog = TransformLog()
    variants = QueryTransformer(llm, **kw).expand(question, names, lang, tlog)
    return variants, tlog


def test_rewrite_feeds_later_transforms():
    llm = ScriptedLLM(router(rewrite="How long is the Acme X200 warranty?",
                             step_back="What does the Acme X200 warranty cover?"))
    variants, tlog = expand(llm, "x200 warrenty how long", ["step_back", "rewrite"])
    assert [v.label for v in variants] == ["original", "rewrite", "step_back"]
    assert variants[0].text == "x200 warrenty how long"
    assert variants[1].text == "How long is the Acme X200 warranty?"
    rewrite_call, step_call = llm.calls
    assert rewrite_call["messages"][0]["content"] == prompts.REWRITE["en"][0]
    assert "x200 warrenty how long" in rewrite_call["messages"][1]["content"]
    assert "How long is the Acme X200 warranty?" in step_call["messages"][1]["content"]  # rewritten input
    assert tlog.steps["rewrite"]["ok"] and tlog.steps["step_back"]["variants"] == [variants[2].text]


def test_multi_query_parses_lines_drops_duplicates_and_caps_n():
    reply = "1. Warranty period of the X200\n- how long is the warranty\n2) \"X200 guarantee length\"\n3. extra\n4. more"
    llm = ScriptedLLM(router(multi_query=reply))
    variants, tlog = expand(llm, "How long is the warranty?", ["multi_query"], multi_query_n=3)
    assert [v.text for v in variants] == ["How long is the warranty?", "Warranty period of the X200",
                                          "X200 guarantee length"]
    assert tlog.steps["multi_query"]["dropped_duplicates"] == 1
    assert "exactly 3 queries" in llm.calls[0]["messages"][0]["content"]
    assert all(v.lists == ("dense", "bm25") for v in variants)


def test_original_query_weight_applies_to_original_only():
    llm = ScriptedLLM(router(multi_query="another phrasing"))
    tlog = TransformLog()
    variants = QueryTransformer(llm).expand("q", ["multi_query"], "en", tlog, original_weight=2.5)
    assert [(v.label, v.weight) for v in variants] == [("original", 2.5), ("multi_query:1", 1.0)]


def test_hyde_is_dense_only_and_skipped_in_bm25_mode():
    llm = ScriptedLLM(router(hyde="Passage: The warranty lasts two years.\nIt covers defects."))
    variants, _ = expand(llm, "warranty length?", ["hyde"])
    assert variants[1].label == "hyde" and variants[1].lists == ("dense",)
    assert variants[1].text == "The warranty lasts two years. It covers defects."
    tlog = TransformLog()
    only = QueryTransformer(llm).expand("warranty length?", ["hyde"], "en", tlog, mode="bm25")
    assert [v.label for v in only] == ["original"] and len(llm.calls) == 1
    assert tlog.steps["hyde"]["ok"] is False


def test_sub_questions_and_step_back():
    llm = ScriptedLLM(router(sub_question="What is the battery life?\nHow long does charging take?",
                             step_back="How does the Acme X200 battery work?"))
    variants, _ = expand(llm, "battery life and charging time?", ["sub_question", "step_back"])
    assert [v.label for v in variants] == ["original", "step_back", "sub_question:1", "sub_question:2"]
    assert variants[2].text == "What is the battery life?"
    sub_call = [c for c in llm.calls if kind_of(c["messages"]) == "sub_question"][0]
    assert "at most 4 sub-questions" in sub_call["messages"][0]["content"]


def test_chinese_question_gets_chinese_prompts():
    llm = ScriptedLLM(router(multi_query="年假有多少天\n带薪休假天数"))
    variants, _ = expand(llm, "员工年假有几天？", ["multi_query"], lang="zh")
    system = llm.calls[0]["messages"][0]["content"]
    assert system == prompts.MULTI_QUERY["zh"][0].format(n=3)
    assert [v.text for v in variants][1:] == ["年假有多少天", "带薪休假天数"]


def test_each_transform_degrades_on_llm_error(caplog):
    llm = ScriptedLLM(router(rewrite=LLMError("endpoint http://llm:8000/v1 is down"),
                             multi_query="warranty duration", hyde=LLMError("timeout")))
    with caplog.at_level(logging.WARNING):
        variants, tlog = expand(llm, "warranty?", ["rewrite", "multi_query", "hyde"])
    assert [v.label for v in variants] == ["original", "multi_query:1"]
    assert tlog.steps["rewrite"] == {"ok": False, "error": "endpoint http://llm:8000/v1 is down",
                                     "seconds": pytest.approx(tlog.steps["rewrite"]["seconds"])}
    assert any("rewrite skipped" in w for w in tlog.warnings) and any("hyde skipped" in w for w in tlog.warnings)
    assert "rewrite skipped" in caplog.text


def test_pipeline_records_transform_failure_and_still_answers_retrieval(tmp_path):
    llm = ScriptedLLM(router(multi_query=LLMError("LLM endpoint http://x/v1 unreachable")))
    result = build_services(tmp_path, llm=llm).pipeline.retrieve("warranty", KB, transforms=["multi_query"])
    assert result.hits and result.hits[0].chunk.id == "warranty"
    assert result.info["transforms"]["multi_query"]["ok"] is False
    assert "unreachable" in result.info["warnings"][0]


def test_transforms_default_from_settings(tmp_path):
    llm = ScriptedLLM(router(step_back="What is covered by a warranty?"))
    services = build_services(tmp_path, llm=llm, transforms=("step_back",))
    result = services.pipeline.retrieve("warranty length", KB)
    assert [v["label"] for v in result.variants] == ["original", "step_back"]
    assert services.pipeline.retrieve("warranty length", KB, transforms=[]).variants[1:] == []


HISTORY = [{"role": "user", "content": "Tell me about the Acme X200 battery."},
           {"role": "assistant", "content": "It lasts about ten hours [1]."}]


def test_condense_resolves_follow_up_and_is_used_for_retrieval(tmp_path):
    llm = ScriptedLLM(router(condense="Standalone question: How long does charging the Acme X200 battery take?"))
    reranker = OverlapReranker()
    services = build_services(tmp_path, llm=llm, reranker=reranker, refuse_min_score=0.0)
    result = services.pipeline.retrieve("How long does charging it take?", KB, history=HISTORY)
    assert result.standalone_question == "How long does charging the Acme X200 battery take?"
    assert result.variants[0]["text"] == result.standalone_question
    user = llm.calls[0]["messages"][1]["content"]
    assert "User: Tell me about the Acme X200 battery." in user and "Assistant: It lasts about ten hours." in user
    assert "[1]" not in user  # citation markers are stripped from the history
    assert "Follow-up question: How long does charging it take?" in user
    assert result.hits[0].chunk.id == "battery"
    # the reranker sees the recent user turns and the follow-up as asked
    assert reranker.calls[0][0] == "Tell me about the Acme X200 battery.\nHow long does charging it take?"


def test_condense_chinese_follow_up():
    llm = ScriptedLLM(router(condense="病假工资怎么发放？"))
    history = [{"role": "user", "content": "病假需要什么证明？"}, {"role": "assistant", "content": "超过三天需要医院证明。"}]
    tlog = TransformLog()
    lang = question_language("那工资呢？", history)
    standalone = QueryTransformer(llm).condense("那工资呢？", history, lang, tlog)
    assert lang == "zh" and standalone.question == standalone.query == "病假工资怎么发放？"
    assert "reason" not in tlog.steps["condense"]
    assert llm.calls[0]["messages"][0]["content"] == prompts.CONDENSE["zh"][0]
    assert "用户: 病假需要什么证明？" in llm.calls[0]["messages"][1]["content"]


def test_condense_without_history_makes_no_llm_call_and_degrades_on_error():
    llm = ScriptedLLM([LLMError("down")])
    tlog = TransformLog()
    transformer = QueryTransformer(llm)
    assert transformer.condense("What is it?", [], "en", tlog).question == "What is it?" and llm.calls == []
    # the model failed: the follow-up is answered from a search with the previous question
    assert transformer.condense("What is it?", HISTORY, "en", tlog) == Condensed(
        "What is it?", "Tell me about the Acme X200 battery.\nWhat is it?")
    assert tlog.steps["condense"]["ok"] is False and "condense skipped: down" in tlog.warnings


def test_condense_rejects_an_empty_reply():
    tlog = TransformLog()
    assert QueryTransformer(ScriptedLLM(["  \n"])).condense("and it?", HISTORY, "en", tlog).query == \
        "Tell me about the Acme X200 battery.\nand it?"
    assert tlog.steps["condense"]["ok"] is False
    assert tlog.steps["condense"]["reason"] == "the model gave no usable question"


WARRANTY = [{"role": "user", "content": "How long is the Acme X200 warranty?"},
            {"role": "assistant", "content": "Two years from the date of purchase [1]."}]
LEAVE = [{"role": "user", "content": "年假有几天？"}, {"role": "assistant", "content": "工作满一年后每年十天。"}]


@pytest.mark.parametrize("history, follow_up, rewrite, why", [
    # the rewrite repeats the earlier question: the follow-up's own word (cover) is lost
    (WARRANTY, "What does it not cover?", "How long is the Acme X200 warranty?", "drops the follow-up's own words"),
    # the rewrite keeps the follow-up but loses the subject (年假)
    (LEAVE, "工作满五年呢？", "工作满五年吗？", "keeps no word of the conversation"),
])
def test_a_rewrite_that_loses_the_follow_up_or_its_subject_is_not_used(history, follow_up, rewrite, why):
    tlog = TransformLog()
    lang = question_language(follow_up, history)
    condensed = QueryTransformer(ScriptedLLM([rewrite])).condense(follow_up, history, lang, tlog)
    assert condensed == Condensed(follow_up, f"{history[0]['content']}\n{follow_up}")
    assert why in tlog.steps["condense"]["reason"] and tlog.steps["condense"]["rejected"] == rewrite
    assert any("condense:" in w for w in tlog.warnings)


def test_a_rewrite_that_keeps_follow_up_and_subject_is_used():
    assert rewrite_problem("What does it not cover?", "What does the Acme X200 warranty not cover?", WARRANTY) is None
    assert rewrite_problem("工作满五年呢？", "工作满五年的年假有几天？", LEAVE) is None
    # a follow-up that names its subject itself needs nothing from the conversation
    assert rewrite_problem("Does the Acme X200 float?", "Does the Acme X200 float?", WARRANTY) is None


def test_a_rejected_rewrite_is_searched_as_the_follow_up_after_the_previous_question(tmp_path):
    llm = ScriptedLLM(router(condense="How long does it take?"))  # the subject (battery) is lost
    services = build_services(tmp_path, llm=llm)
    result = services.pipeline.retrieve("How long does charging it take?", KB, history=HISTORY)
    # answered as asked, from a search with the previous question
    assert result.standalone_question == "How long does charging it take?"
    assert [v["text"] for v in result.variants] == ["Tell me about the Acme X200 battery.\nHow long does charging it take?"]
    condense = result.trace.transforms["condense"]
    assert condense["rejected"] == "How long does it take?" and condense["reason"] == \
        "the rewrite keeps no word of the conversation"


def test_conversation_query_uses_recent_user_turns():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"},
               {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]
    assert conversation_query("q", history) == "b\nc\nq"
    assert conversation_query(" q ", None) == "q"


@pytest.mark.parametrize("line,expected", [
    ("1. What is X?", "What is X?"), ("- what", "what"), ("Question: Why?", "Why?"), ("问题：为什么？", "为什么？"),
    ('"quoted"', "quoted"), ("**Standalone question:** How?", "How?"), ("Note: keep this", "Note: keep this"),
])
def test_clean_line(line, expected):
    assert clean_line(line) == expected
