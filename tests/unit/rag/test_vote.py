"""Answer by agreement (rag/vote.py, `answer_vote`): three prompt layouts over the same sources,
the answer that agrees most with the other two kept, streamed whole."""

from __future__ import annotations

from rag.adapters.llm_fake import ScriptedLLM
from rag.generation import Layout
from rag.vote import agreement, most_agreed
from tests.unit.kb_fixtures import KB, build_services, router

QUESTION = "How long is the Acme X200 warranty?"


def test_agreement_is_word_overlap_without_markers_and_a_refusal_agrees_with_nothing():
    assert agreement("The warranty lasts two years [1].", "The warranty lasts two years [3].") == 1.0
    assert 0 < agreement("The warranty lasts two years [1].", "Two years from purchase [2].") < 1
    assert agreement("I could not find this in the documents.", "I could not find this in the documents.") == 0.0
    assert agreement("保修期是两年 [1]。", "保修期为两年 [2]。") > 0.3  # jieba words


def test_the_most_agreed_answer_wins_and_the_first_breaks_ties():
    best, scores = most_agreed(["Alice Smith won [1].", "Bob Jones won in 2019 [2].", "Bob Jones won it [2]."])
    assert best in (1, 2) and scores[best] == max(scores)
    assert most_agreed(["one answer", "another text", "third thing"])[0] == 0  # nothing shared: the first


def layouts():
    """Replies in call order (configured, question first, fewer sources): the last two agree."""
    replies = iter(["Hold the power button for fifteen seconds [2].",
                    "The Acme X200 warranty lasts two years from purchase [1].",
                    "The warranty lasts two years from the date of purchase [1]."])
    return lambda messages: next(replies)


def test_the_pipeline_keeps_the_answer_two_layouts_agree_on(tmp_path):
    llm = ScriptedLLM(router(answer=layouts()))
    services = build_services(tmp_path, llm=llm, answer_vote=True, strategy_parallel=1)  # replies in call order
    answer = services.pipeline.answer(QUESTION, KB)
    assert len(llm.calls) == 3
    vote = answer.info["vote"]
    assert [c["layout"] for c in vote["candidates"]] == ["configured", "question_first", "fewer_sources"]
    assert vote["chosen"] == "question_first" and "two years" in answer.answer  # the first of the two agreeing
    assert answer.info["strategy"]["llm_calls"] == 3 and not answer.refused
    assert answer.citations and all(c.chunk_id for c in answer.citations)
    streamed = list(build_services(tmp_path / "s", llm=ScriptedLLM(router(answer=layouts())), answer_vote=True,
                                   strategy_parallel=1).pipeline.stream(QUESTION, KB))
    tokens = "".join(e["text"] for e in streamed if e["type"] == "token")
    assert "two years" in tokens and streamed[-1]["answer"]["info"]["vote"]["chosen"] == vote["chosen"]


def test_the_three_calls_may_run_side_by_side(tmp_path):
    def by_layout(messages):
        if messages[-1]["content"].startswith("Question:"):
            return "The Acme X200 warranty lasts two years from purchase [1]."
        return "Hold the power button for fifteen seconds [2]."

    llm = ScriptedLLM(router(answer=by_layout))
    answer = build_services(tmp_path, llm=llm, answer_vote=True, strategy_parallel=3).pipeline.answer(QUESTION, KB)
    assert len(llm.calls) == 3 and answer.info["vote"]["chosen"] == "configured"  # two of three agree


def test_one_call_by_default(tmp_path):
    llm = ScriptedLLM(router(answer=layouts()))
    answer = build_services(tmp_path, llm=llm).pipeline.answer(QUESTION, KB)
    assert len(llm.calls) == 1 and "vote" not in answer.info


def test_the_fewer_sources_layout_reads_those_about_the_question_else_the_better_half():
    from rag.generation import pack_context
    from rag.types import Chunk, Hit
    from rag.vote import candidates

    def packed(texts):
        chunks = [Chunk(id=f"c{i}", kb=KB, doc_id=f"d{i}", source=f"s{i}.md", text=t, start=0, end=len(t),
                        title=f"T{i}") for i, t in enumerate(texts)]
        return pack_context([Hit(chunk=c, score=1.0) for c in chunks], budget=2000, max_sources=5)

    on_topic = ["The Acme X200 warranty lasts two years.", "The Acme X200 warranty covers the battery.",
                "Acme X200 warranty claims need the receipt.", "The Acme X200 warranty excludes water damage."]
    cands = candidates(QUESTION, packed(on_topic), "en", Layout(), 0.5)
    assert [len(c.packed.sources) for c in cands] == [4, 4, 2]
    assert cands[1].messages[-1]["content"].startswith("Question:") and cands[0].messages[-1]["content"].startswith(
        "Sources:")
    mixed = packed([on_topic[0], "Hold the power button for fifteen seconds.", on_topic[1]])
    fewer = candidates(QUESTION, mixed, "en", Layout(), 0.5)[2].packed
    assert [s.text for s in fewer.sources] == [on_topic[0], on_topic[1]]


def test_rag_eval_records_the_vote_per_question(tmp_path, monkeypatch):
    from tests.unit.eval.test_eval_runner import evaluate, parse_config, spec, write_dataset

    monkeypatch.setenv("RAG_ANSWER_VOTE", "true")  # the eval's settings read the environment
    dataset = write_dataset(tmp_path / "tiny")
    llm = ScriptedLLM(lambda messages: "It was completed in 1889 [1].")
    result = evaluate(tmp_path, spec(dataset, tmp_path, "hybrid", answers=True, answer_config=parse_config("hybrid")),
                      llm=llm)
    votes = [r["vote"] for r in result.answers.per_query if r["vote"]]
    assert votes and all(v["chosen"] == "configured" and len(v["candidates"]) == 3 for v in votes)  # all agree
