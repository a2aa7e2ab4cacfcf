"""Does the answer address the question (rag/answer_check.py): focus of the question, a date or
number where one is asked, no number that no source states, the question's year, not a mere
restatement; and the pipeline refusing what fails."""

from __future__ import annotations

import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.answer_check import check_answer, check_sources, question_coverage, question_focus, sources_about
from rag.types import Citation, Source
from tests.unit.kb_fixtures import KB, build_services, make_chunks, router


def source(number: int, text: str, title: str = "Doc") -> Source:
    return Source(number=number, chunk_id=f"c{number}", doc_id=f"d{number}", source=f"s{number}.md", title=title,
                  section_path=(), page=None, start=0, end=len(text), text=text, score=0.1)


def cite(number: int) -> Citation:
    return Citation(number=number, sentence="x", sentence_start=0, sentence_end=1, source_number=number,
                    chunk_id=f"c{number}")


@pytest.mark.parametrize("question, focus", [
    ("How many children were infected by HIV-1 in 2008?", "number"),
    ("What percentage of patients recovered?", "number"),
    ("When was the virus first identified?", "time"),
    ("In which year did the outbreak start?", "time"),
    ("Who is the Maxwell Award winner in 2019?", "person"),
    ("Where was the first case reported?", "place"),
    ("What is the main cause of HIV-1 infection in children?", "other"),
    ("《战国无双3》是由哪两个公司合作开发的？", "other"),
    ("员工每年有多少天年假？", "number"),
    ("这座桥是什么时候建成的？", "time"),
    ("2018年超级碗冠军是谁", "person"),
    ("印度的首都在哪", "place"),
    ("许多大型企业采用什么技术？", "other"),
    ("How often should the filter be cleaned?", "other"),
])
def test_question_focus(question, focus):
    assert question_focus(question) == focus


def test_a_when_question_needs_a_date_and_a_how_many_question_a_number():
    sources = [source(1, "The bridge opened in 1932 after six years of work.")]
    assert check_answer("When did the bridge open?", "In 1932 [1].", sources).ok
    failed = check_answer("When did the bridge open?", "The bridge is made of steel [1].", sources)
    assert not failed.ok and failed.reason == "missing_time" and failed.focus == "time"
    assert check_answer("How many years did the work take?", "Six years [1].", sources).ok
    assert check_answer("When should the filter be replaced?", "When it turns grey [1].",
                        [source(1, "Replace the filter when it turns grey.")]).ok  # a condition answers when
    assert check_answer("这座桥是什么时候建成的？", "1932年 [1]。", [source(1, "大桥于1932年建成。")]).ok
    assert not check_answer("员工有多少天年假？", "员工享有带薪年假 [1]。", [source(1, "员工享有十五天带薪年假。")]).ok


def test_a_number_no_source_states_is_refused():
    sources = [source(1, "The trial enrolled 1,313 patients in 2020.")]
    assert check_answer("How many patients were enrolled?", "1313 patients [1].", sources).ok
    invented = check_answer("How many patients were enrolled?", "About 900 patients [1].", sources)
    assert not invented.ok and invented.reason == "number_not_in_sources" and "900" in invented.detail
    assert check_answer("What happened on 2020-03-05?", "Enrolment began on 5 March 2020 [1].",
                        [source(1, "Enrolment began on 2020-03-05.")]).ok  # "05" and "5" are one figure


def test_the_question_year_must_be_stated_by_the_cited_source():
    sources = [source(1, "The 2018 Maxwell Award went to Tua Tagovailoa."),
               source(2, "In 2019 the Maxwell Award went to Joe Burrow.")]
    wrong = check_answer("Who is the Maxwell Award winner in 2019?", "Tua Tagovailoa [1].", sources, [cite(1)])
    assert not wrong.ok and wrong.reason == "year_mismatch"
    assert check_answer("Who is the Maxwell Award winner in 2019?", "Joe Burrow [2].", sources, [cite(2)]).ok
    # a source that states no year at all cannot be wrong about it
    assert check_answer("Who won in 2019?", "Burrow [1].", [source(1, "Burrow won the award.")], [cite(1)]).ok


def test_restating_the_question_is_not_an_answer():
    failed = check_answer("What is the Wonder Woman 1984 release?", "Wonder Woman 1984 release [1].",
                          [source(1, "Wonder Woman 1984 release was delayed.")])
    assert not failed.ok and failed.reason == "restates_question"
    assert check_answer("Is the SARS coronavirus single-stranded or double-stranded?",
                        "The SARS coronavirus is single-stranded [1].",
                        [source(1, "SARS-CoV is a single-stranded RNA virus.")]).ok  # picking an offered option


def test_the_pipeline_refuses_an_answer_that_fails_the_check_and_says_why(tmp_path):
    llm = ScriptedLLM(router(answer="The Acme X200 warranty lasts five years [1]."))
    services = build_services(tmp_path, llm=llm)
    answer = services.pipeline.answer("How many years does the Acme X200 warranty last?", KB)
    assert answer.refused and answer.info["refusal_reason"] in ("off_topic_answer", "unsupported_answer")
    assert answer.citations == [] and "five years" in answer.info["unsupported_answer"]


def test_the_check_can_be_switched_off(tmp_path):
    llm = ScriptedLLM(router(answer="The Acme X200 warranty lasts 9 years from the date of purchase [1]."))
    # refuse_unsupported off: the citation check alone would refuse this one too
    on = build_services(tmp_path / "on", llm=llm, refuse_unsupported=False).pipeline.answer(
        "How many years is the X200 warranty?", KB)
    assert on.refused and on.info["refusal_reason"] == "off_topic_answer"
    assert on.info["answer_check"] == {"ok": False, "focus": "number", "reason": "number_not_in_sources",
                                       "detail": "not in any source: 9"}
    off = build_services(tmp_path / "off", llm=llm, answer_check=False, refuse_unsupported=False).pipeline.answer(
        "How many years is the X200 warranty?", KB)
    assert not off.refused and "answer_check" not in off.info


AWARD = [source(1, "Joe Burrow of LSU won the 2019 Maxwell Award as the best player in college football.",
                title="Maxwell Award"),
         source(2, "The Heisman Trophy is awarded each December to the most outstanding college football player.",
                title="Heisman Trophy")]


def test_an_answer_from_a_source_on_another_subject_is_refused():
    # noise only: the sources share "player"/"football" with the question, not its subject
    question = "Which club did the Brazilian striker Ronaldo join after the World Cup?"
    wrong = check_answer(question, "LSU [1].", AWARD, [cite(1)], min_coverage=0.5)
    assert not wrong.ok and wrong.reason == "question_not_covered" and "of the question's terms" in wrong.detail
    assert check_answer(question, "LSU [1].", AWARD, [cite(1)]).ok  # min_coverage 0: not judged


def test_an_answer_from_the_source_on_the_question_passes_and_the_cited_source_is_the_one_judged():
    question = "Who won the 2019 Maxwell Award?"
    assert check_answer(question, "Joe Burrow [1].", AWARD, [cite(1)], min_coverage=0.5).ok
    assert question_coverage(question, AWARD, AWARD[:1]) == 1.0
    assert question_coverage(question, AWARD, AWARD[1:]) < 0.5  # the Heisman passage states neither 2019 nor Maxwell


def test_coverage_forgives_question_words_one_paraphrased_term_and_other_languages():
    policy = [source(1, "Passwords must have at least twelve characters and change every 90 days.", title="Security")]
    # "rules" is not in the source, but one missing term is not judged; "how long" shapes the question
    assert question_coverage("What are the password rules?", policy, policy) == 1.0
    assert question_coverage("How long must a password be?", policy, policy) == 1.0
    assert question_coverage("Summarise the document on password security.", policy, policy) == 1.0
    # an English question on a Chinese source cannot be judged by shared words
    zh = [source(1, "员工每年享有十五天带薪年假。", title="员工手册")]
    assert question_coverage("How many days of paid leave do employees get per year?", zh, zh) is None


def test_chinese_terms_count_when_their_characters_appear():
    fish = [source(1, "本鱼体延长而细，呈亚圆柱型。", title="糙头细银汉鱼"),
            source(2, "邵伯温著有《邵氏闻见录》，记北宋故事。", title="邵伯温")]
    assert question_coverage("邵伯温曾写过什么著作？", fish, fish[1:]) == 1.0
    assert question_coverage("邵伯温曾写过什么著作？", fish, fish[:1]) < 0.5  # a passage on a fish
    assert question_coverage("银汉鱼的体型呈什么形状？", fish, fish[:1]) >= 0.5  # its title names the fish


def test_sources_about_the_question_are_those_each_covering_it_and_those_that_cannot_be_judged():
    venue = source(3, "The 2019 ceremony took place in Atlanta.", title="Ceremony")
    zh = source(4, "马克斯韦尔奖2019年由乔·伯罗获得。", title="马克斯韦尔奖")
    ranked = [AWARD[1], zh, venue, AWARD[0]]
    about = sources_about("Who won the 2019 Maxwell Award?", ranked, 0.5)
    assert [s.number for s in about] == [4, 1]  # in their order; the Chinese one cannot be judged
    assert len(sources_about("Who won the 2019 Maxwell Award?", ranked, 0.0)) == 4


def test_sources_that_together_miss_the_question_are_refused_before_the_model_is_called():
    assert not check_sources("Which club did Ronaldo join after the World Cup?", AWARD, 0.5).ok
    assert check_sources("Who won the 2019 Maxwell Award?", AWARD, 0.5).ok
    assert check_sources("Which club did Ronaldo join after the World Cup?", AWARD, 0.0).ok  # off
    # a mixed-language collection: the Chinese source may be the relevant one, so it is not judged
    mixed = [*AWARD, source(3, "罗纳尔多在世界杯后加盟皇家马德里。", title="罗纳尔多")]
    assert check_sources("Which club did Ronaldo join after the World Cup?", mixed, 0.5).ok


def test_the_pipeline_refuses_without_the_model_when_no_source_is_about_the_question(tmp_path):
    llm = ScriptedLLM(router(answer="The Acme X200 warranty lasts two years from the date of purchase [1]."))
    question = "Which river does the Elbonian capital stand on?"
    english = [c for c in make_chunks() if c.id not in ("leave", "sick")]
    answer = build_services(tmp_path / "on", llm=llm, chunks=english).pipeline.answer(question, KB)
    assert answer.refused and answer.info["refusal_reason"] == "off_topic_sources" and not llm.calls
    assert answer.info["answer_check"]["reason"] == "question_not_covered" and answer.sources
    streamed = list(build_services(tmp_path / "stream", llm=llm, chunks=english).pipeline.stream(question, KB))
    done = streamed[-1]["answer"]
    assert done["refused"] and done["info"]["refusal_reason"] == "off_topic_sources" and not llm.calls
    off = build_services(tmp_path / "off", llm=llm, chunks=english, answer_min_coverage=0).pipeline.answer(question, KB)
    assert not off.refused and len(llm.calls) == 1


def test_the_pipeline_refuses_an_answer_citing_a_source_off_the_question(tmp_path):
    # the retrieved sources together are about the question (its warranty), the cited one is not
    llm = ScriptedLLM(router(answer="Hold the power button for fifteen seconds [2]."))
    answer = build_services(tmp_path, llm=llm, refuse_unsupported=False).pipeline.answer(
        "Which damage does the Acme X200 warranty exclude?", KB)
    assert answer.sources and answer.refused and answer.info["refusal_reason"] == "off_topic_answer"


def test_with_context_about_the_model_reads_only_the_sources_about_the_question(tmp_path):
    from rag.types import Chunk

    texts = {"award-2019": "Joe Burrow of LSU won the 2019 Maxwell Award as the best player in college football.",
             "heisman": "The Heisman Trophy is awarded each December to the most outstanding college football player.",
             "venue": "In 2019 the college football season ended with a final in Atlanta."}
    chunks = [Chunk(id=cid, kb=KB, doc_id=cid, source=f"{cid}.md", text=t, start=0, end=len(t), title="Sports")
              for cid, t in texts.items()]
    llm = ScriptedLLM(router(answer="Joe Burrow won the 2019 Maxwell Award [1]."))
    question = "Who won the 2019 Maxwell Award?"
    on = build_services(tmp_path / "on", llm=llm, chunks=chunks, context_about=True).pipeline.answer(question, KB)
    prompt = llm.last_messages[-1]["content"]
    assert "Joe Burrow" in prompt and "Heisman" not in prompt and "Atlanta" not in prompt
    assert [s.chunk_id for s in on.sources] == ["award-2019"] and on.info["context"]["off_topic_left_out"] == 2
    assert not on.refused
    off = build_services(tmp_path / "off", llm=llm, chunks=chunks).pipeline.answer(question, KB)  # the default
    assert len(off.sources) == 3 and "off_topic_left_out" not in off.info["context"]
    # each states a third of the question, the two together two thirds: both are read, as before
    split = build_services(tmp_path / "split", llm=llm, chunks=chunks[1:], context_about=True).pipeline.answer(
        "Was the 2019 Heisman Trophy ceremony held in Atlanta?", KB)
    assert len(split.sources) == 2 and "off_topic_left_out" not in split.info["context"]
