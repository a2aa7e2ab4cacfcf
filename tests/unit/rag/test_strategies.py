"""Combine strategies through the real pipeline with a scripted LLM: each strategy's call sequence,
citations that keep the original source numbers through every step, auto choosing stuff or
map_reduce by the token budget and the model in use (with its reason), map_rerank ranking its
candidates by the verifier's support and the question's coverage, map_reduce falling back to its
verified partial answers, streaming of the final step, and verification of the final answer."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.errors import InvalidRequest
from rag.pipeline import Pipeline
from rag.generation import PackedContext
from rag.names import MAP_REDUCE, STUFF
from rag.strategies import AUTO_WHEN_TOO_LONG, RERANK_REPLY_CHARS, group_sources, keep_markers, parse_score, resolve
from tests.unit.kb_fixtures import KB, build_services, kind_of, make_chunks, router

QUESTION = "warranty battery reset passwords"
_BLOCK = re.compile(r"\[(\d+)\] [^\n]*\n([^\n]+)")


def blocks(messages) -> list[tuple[int, str]]:
    """(number, text) of the sources in the last user turn."""
    return [(int(n), text) for n, text in _BLOCK.findall(messages[-1]["content"])]


def first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".") + "."


def map_reply(messages) -> str:
    """A faithful map step: the first sentence of every source, cited with its number."""
    return " ".join(f"{first_sentence(t)[:-1]} [{n}]." for n, t in blocks(messages))


def reduce_reply(messages) -> str:
    """A faithful reduce step: the partial answers joined, markers kept."""
    body = messages[-1]["content"].split("Partial answers:")[1].split("Final answer:")[0]
    return " ".join(line for line in body.splitlines() if line.strip() and not line.startswith("Part "))


def kinds(llm: ScriptedLLM) -> list[str]:
    return [kind_of(c["messages"]) for c in llm.calls]


def pipeline(tmp_path, llm, **settings) -> Pipeline:
    # QUESTION is a list of four subjects that each partial answer covers one of: the coverage gate
    # (rag/answer_check.py) would refuse them, and it is not what these tests are about
    settings.setdefault("answer_min_coverage", 0)
    return build_services(tmp_path, llm=llm, strategy_group_sources=1, strategy_parallel=1, **settings).pipeline


def test_map_reduce_maps_each_group_then_reduces_keeping_original_numbers(tmp_path):
    llm = ScriptedLLM(router(map=map_reply, reduce=reduce_reply))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=4)
    assert kinds(llm) == ["map"] * 4 + ["reduce"]
    # each map call saw one source under its original number
    assert [blocks(c["messages"])[0][0] for c in llm.calls[:4]] == [1, 2, 3, 4]
    reduce_prompt = llm.calls[-1]["messages"][-1]["content"]
    assert all(f"[{n}]" in reduce_prompt for n in (1, 2, 3, 4))
    info = answer.info["strategy"]
    assert info["name"] == "map_reduce" and info["groups"] == [[1], [2], [3], [4]] and info["llm_calls"] == 5
    assert not answer.refused and len(answer.sources) == 4
    by_number = {s.number: s.chunk_id for s in answer.sources}
    cited = {c.number: c.chunk_id for c in answer.citations if c.origin == "model"}
    assert cited == by_number  # every final marker names the source with that number
    assert all(c.supported for c in answer.citations)
    assert "strategy" in answer.timings
    assert info["reason"].startswith("requested") and "fallback" not in info  # the reduce answer passed its checks


def test_map_reduce_drops_markers_a_map_step_was_not_shown(tmp_path):
    llm = ScriptedLLM(router(map=lambda m: map_reply(m) + " Extra [7].", reduce=reduce_reply))
    pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=2)
    assert "[7]" not in llm.calls[-1]["messages"][-1]["content"]


def test_map_reduce_with_every_map_refusing_refuses_without_a_reduce_call(tmp_path):
    llm = ScriptedLLM(router(map="I could not find this in the documents."))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=3)
    assert kinds(llm) == ["map"] * 3 and answer.refused
    assert answer.info["refusal_reason"] == "model_refused"


def test_refine_answers_the_first_group_then_improves_with_each_next(tmp_path):
    seen = []

    def refine(messages):
        existing = messages[-1]["content"].split("Existing answer:\n")[1].split("\n\nNew sources:")[0]
        seen.append(existing)
        return existing + " " + map_reply(messages)

    llm = ScriptedLLM(router(answer=map_reply, refine=refine))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="refine", limit=3)
    assert kinds(llm) == ["answer", "refine", "refine"]
    assert "[1]" in seen[0] and "[2]" in seen[1]  # each step improves the previous answer
    assert answer.info["strategy"]["refine_steps"] == 2
    cited = sorted({c.source_number for c in answer.citations if c.origin == "model"})
    assert cited == [1, 2, 3] and all(c.supported for c in answer.citations)
    assert [s.chunk_id for s in answer.sources] == [c.chunk_id for c in answer.citations if c.origin == "model"]


def test_map_rerank_returns_the_best_scored_answer_cited_to_its_source(tmp_path):
    def rerank(messages):
        number, text = blocks(messages)[0]
        score = 90 if "twelve characters" in text else 20
        return f"{first_sentence(text)} [1]\nScore: {score}"  # the model numbers its only source [1]

    llm = ScriptedLLM(router(map_rerank=rerank))
    answer = pipeline(tmp_path, llm).answer("How many characters must passwords have?", KB,
                                            strategy="map_rerank", limit=4)
    assert kinds(llm) == ["map_rerank"] * 4
    chosen = answer.info["strategy"]["chosen"]
    source = next(s for s in answer.sources if s.number == chosen)
    by_source = {c["source"]: c for c in answer.info["strategy"]["candidates"]}
    assert source.chunk_id == "passwords" and by_source[chosen]["self_score"] == 90
    assert answer.answer.startswith("Passwords must have at least twelve characters")
    assert [c.source_number for c in answer.citations] == [chosen] and answer.citations[0].supported
    assert "Score" not in answer.answer


def test_map_rerank_ignores_an_answer_without_words(tmp_path):
    llm = ScriptedLLM(router(map_rerank=lambda m: "% [1]\nScore: 95" if blocks(m)[0][0] == 1 else
                             f"{first_sentence(blocks(m)[0][1])} Score: 40"))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_rerank", limit=2)
    candidates = answer.info["strategy"]["candidates"]
    assert answer.info["strategy"]["chosen"] == 2 and candidates[0]["excluded"] == "refused"


def test_map_rerank_with_every_candidate_refusing_refuses(tmp_path):
    llm = ScriptedLLM(router(map_rerank="I could not find this in the documents. Score: 0"))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_rerank", limit=2)
    assert answer.refused and answer.info["strategy"]["chosen"] is None


WARRANTY = "How long is the Acme X200 warranty?"


def test_map_rerank_chooses_the_supported_answer_over_a_higher_self_score(tmp_path):
    # the 0.5B model chose the security policy with score 90: "warranty is 14 years long"
    def rerank(messages):
        number, text = blocks(messages)[0]
        if "warranty lasts" in text:
            return "The warranty lasts two years from the date of purchase [1].\nScore: 20"
        return "The warranty is 14 years long [1].\nScore: 90"

    llm = ScriptedLLM(router(map_rerank=rerank))
    answer = pipeline(tmp_path, llm, answer_min_coverage=0.5).answer(WARRANTY, KB, strategy="map_rerank", limit=4)
    info = answer.info["strategy"]
    chosen = next(s for s in answer.sources if s.number == info["chosen"])
    assert chosen.chunk_id == "warranty" and not answer.refused
    assert answer.answer == f"The warranty lasts two years from the date of purchase [{chosen.number}]."
    # every candidate stays in the trace: its raw reply, self-score, support, coverage and rank
    assert [c["source"] for c in info["candidates"]] == [1, 2, 3, 4] and info["map_calls"] == 4
    for candidate in info["candidates"]:
        assert {"reply", "self_score", "support", "supported_claims", "coverage", "rank_score"} <= set(candidate)
        if candidate["source"] == chosen.number:
            assert candidate["self_score"] == 20 and candidate["rank_score"] > 0.5 and "excluded" not in candidate
        else:
            assert candidate["reply"].endswith("Score: 90") and candidate["excluded"] == "unsupported"
            assert candidate["rank_score"] is None and candidate["supported_claims"] == "0/1"


def test_map_rerank_ranks_by_the_question_coverage_before_the_self_score(tmp_path):
    # both answers are true to their source; only one is about the warranty
    def rerank(messages):
        number, text = blocks(messages)[0]
        return f"{first_sentence(text)} [1]\nScore: {10 if 'warranty lasts' in text else 95}"

    llm = ScriptedLLM(router(map_rerank=rerank))
    answer = pipeline(tmp_path, llm).answer(WARRANTY, KB, strategy="map_rerank", limit=3)
    info = answer.info["strategy"]
    by_source = {c["source"]: c for c in info["candidates"]}
    chosen = next(s for s in answer.sources if s.number == info["chosen"])
    assert chosen.chunk_id == "warranty" and by_source[chosen.number]["self_score"] == 10
    assert all(c["support"] > 0.5 and "excluded" not in c for c in info["candidates"])  # all supported
    assert all(by_source[chosen.number]["coverage"] > c["coverage"] for n, c in by_source.items() if n != chosen.number)


def test_map_rerank_self_score_only_breaks_ties(tmp_path):
    # the same supported answer from two sources that state it alike: equal ranks, the self-score decides
    chunks = [make_chunks()[0], replace(make_chunks()[0], id="warranty-copy", doc_id="doc-copy", source="copy.pdf",
                                        title="Acme X200 Manual (copy)")]
    llm = ScriptedLLM(router(map_rerank=lambda m: f"{first_sentence(blocks(m)[0][1])} [1]\nScore: "
                                                  f"{90 if '(copy)' in m[-1]['content'] else 40}"))
    services = build_services(tmp_path, llm=llm, chunks=chunks, strategy_parallel=1, answer_min_coverage=0,
                              context_dedupe=False)
    info = services.pipeline.answer(WARRANTY, KB, strategy="map_rerank", limit=2).info["strategy"]
    first, second = info["candidates"]
    assert first["rank_score"] == second["rank_score"] is not None
    assert (first["self_score"], second["self_score"]) == (40, 90) and info["chosen"] == 2


def test_map_rerank_refuses_when_no_source_supports_any_candidate(tmp_path):
    llm = ScriptedLLM(router(map_rerank="The warranty is 14 years long [1].\nScore: 90"))
    answer = pipeline(tmp_path, llm).answer(WARRANTY, KB, strategy="map_rerank", limit=3)
    info = answer.info["strategy"]
    assert answer.refused and info["chosen"] is None and answer.citations == []
    assert [c["excluded"] for c in info["candidates"]] == ["unsupported"] * 3


def test_map_rerank_keeps_replies_bounded_in_the_trace(tmp_path):
    long_reply = "The Acme X200 warranty lasts two years from the date of purchase [1]. " + "x" * 2000 + " Score: 50"
    llm = ScriptedLLM(router(map_rerank=long_reply))
    info = pipeline(tmp_path, llm).answer(WARRANTY, KB, strategy="map_rerank", limit=2).info["strategy"]
    assert all(len(c["reply"]) == RERANK_REPLY_CHARS for c in info["candidates"])


def test_auto_stuffs_sources_that_fit(tmp_path):
    llm = ScriptedLLM(router(answer="The Acme X200 warranty lasts two years from the date of purchase [1]."))
    answer = pipeline(tmp_path, llm).answer("How long is the Acme X200 warranty?", KB)
    n = len(answer.sources)
    assert kinds(llm) == ["answer"] and answer.info["strategy"] == {
        "requested": "auto", "name": "stuff", "reason": f"auto: the {n} sources fit the prompt whole", "llm_calls": 1}


ENDPOINT = "http://127.0.0.1:9/v1"  # an OpenAI-compatible endpoint (never called: the LLM is given)


def test_auto_maps_and_reduces_when_the_sources_do_not_fit(tmp_path):
    llm = ScriptedLLM(router(map=map_reply, reduce=reduce_reply))
    services = build_services(tmp_path, llm=llm, llm_context_window=640, llm_max_tokens=256, llm_base_url=ENDPOINT)
    answer = services.pipeline.answer(QUESTION, KB, limit=7)
    assert answer.info["strategy"]["requested"] == "auto" and answer.info["strategy"]["name"] == "map_reduce"
    assert answer.info["strategy"]["reason"].startswith("auto: 7 sources do not fit whole (budget ")
    assert "; map_reduce, because map_reduce reads every source" in answer.info["strategy"]["reason"]
    assert kinds(llm)[-1] == "reduce" and kinds(llm).count("map") == len(answer.info["strategy"]["groups"]) > 1
    assert len(answer.sources) == 7 and answer.info["context"]["left_out"] == 0  # every hit reached a map step
    assert not answer.refused and all(c.supported for c in answer.citations)


@pytest.mark.parametrize("embedded", ["small", "large"])
def test_auto_stuffs_the_sources_that_fit_with_an_embedded_model(tmp_path, embedded):
    answer_text = "The Acme X200 warranty lasts two years from the date of purchase [1]."
    llm = ScriptedLLM(router(answer=answer_text))
    services = build_services(tmp_path, llm=llm, llm_context_window=640, llm_max_tokens=256, llm_embedded=embedded)
    answer = services.pipeline.answer(QUESTION, KB, limit=7)
    info, context = answer.info["strategy"], answer.info["context"]
    assert kinds(llm) == ["answer"] and info["name"] == "stuff" and info["llm_calls"] == 1
    assert context["left_out"] + len(context["trimmed"]) > 0  # the sources did not fit whole
    # the one prompt holds the packed (trimmed) sources, the ones the answer shows (best last: from the last number)
    assert [n for n, _ in blocks(llm.calls[0]["messages"])] == [s.number for s in reversed(answer.sources)]
    assert len(answer.sources) == context["sources"] < 7
    assert info["reason"].startswith("auto: 7 sources do not fit whole") and (
        f"stuff with the {len(answer.sources)} that fit" in info["reason"])
    assert info["reason"].endswith("took 3x the time" if embedded == "large" else "than stuff with this model")


def test_auto_table_per_model():
    assert AUTO_WHEN_TOO_LONG == {"small": STUFF, "large": STUFF, None: MAP_REDUCE}
    fits = PackedContext([], 100)
    too_long = PackedContext([], 100, left_out=3)
    assert resolve("auto", fits, "small") .name == STUFF and resolve("auto", fits, None).name == STUFF
    assert resolve("auto", too_long, "small").name == STUFF and resolve("auto", too_long, "large").name == STUFF
    assert resolve("auto", too_long, None).name == MAP_REDUCE
    assert resolve("auto", too_long, "some-other-key").name == MAP_REDUCE  # unknown: as any other model
    assert resolve("refine", too_long, "small").name == "refine" and resolve("refine", fits).reason == "requested"
    # a requested strategy measured to answer worse with the model in use says so
    assert "measured to answer worse than stuff" in resolve("map_reduce", fits, "small").reason
    assert resolve("map_reduce", fits, "large").reason == resolve("map_rerank", fits, "small").reason == "requested"


def test_streaming_streams_only_the_reduce_step(tmp_path):
    llm = ScriptedLLM(router(map=map_reply, reduce=reduce_reply))
    events = list(pipeline(tmp_path, llm).stream(QUESTION, KB, strategy="map_reduce", limit=3))
    # every call goes through llm.stream (timed, rag/llm_timing.py); only the reduce call's tokens reach the client
    assert len(llm.calls) == 4 and kinds(llm)[-1] == "reduce"
    tokens = [e["text"] for e in events if e["type"] == "token"]
    done = events[-1]["answer"]
    assert len(tokens) > 3 and "".join(tokens) == done["answer"]
    assert done["info"]["strategy"]["name"] == "map_reduce"
    assert [s["number"] for s in events[0]["sources"]] == [1, 2, 3]  # all sources announced up front
    assert {c["source_number"] for c in done["citations"]} == {1, 2, 3}


def test_streaming_map_rerank_sends_the_chosen_answer(tmp_path):
    llm = ScriptedLLM(router(map_rerank=lambda m: f"{first_sentence(blocks(m)[0][1])} [1] Score: 50"))
    events = list(pipeline(tmp_path, llm).stream(QUESTION, KB, strategy="map_rerank", limit=2))
    done = events[-1]["answer"]
    assert "".join(e["text"] for e in events if e["type"] == "token") == done["answer"]
    assert done["info"]["strategy"]["chosen"] == 1 and not done["refused"]


def test_an_unsupported_reduced_answer_falls_back_to_the_verified_partial_answers(tmp_path):
    bad = "The moon is made of green cheese [1]. Cats can fly [2]."
    llm = ScriptedLLM(router(map=map_reply, reduce=bad))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=2)
    assert kinds(llm) == ["map", "map", "reduce"] and not answer.refused
    partials = [map_reply(c["messages"]) for c in llm.calls[:2]]
    assert answer.answer == "\n\n".join(partials)  # each partial with its own [n], in the global numbering
    assert {c.source_number for c in answer.citations if c.origin == "model"} == {1, 2}
    assert all(c.supported for c in answer.citations)
    fallback = answer.info["strategy"]["fallback"]
    assert fallback == {"used": True, "refused_reason": "unsupported_answer", "refused_answer": bad}
    assert "refusal_reason" not in answer.info


def test_a_refusing_reduce_call_falls_back_to_the_verified_partial_answers(tmp_path):
    llm = ScriptedLLM(router(map=map_reply, reduce="I could not find this in the documents."))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=3)
    assert not answer.refused and answer.info["strategy"]["fallback"]["refused_reason"] == "model_refused"
    assert [f"[{n}]" in answer.answer for n in (1, 2, 3)] == [True] * 3


def test_the_refusal_stands_when_the_fallback_fails_its_checks_too(tmp_path):
    # a number question: the reduce answer and the partial answers state no number (answer check)
    def maps(messages):
        return f"{blocks(messages)[0][1].split('. ')[1]} [{blocks(messages)[0][0]}]."  # a second sentence

    llm = ScriptedLLM(router(map=maps, reduce="The warranty covers manufacturing defects [1]."))
    answer = pipeline(tmp_path, llm, answer_min_coverage=0).answer(
        "How many years does the Acme X200 warranty last?", KB, strategy="map_reduce", limit=2)
    assert answer.refused and answer.info["refusal_reason"] == "off_topic_answer"
    assert answer.info["strategy"]["fallback"]["used"] is False


def test_unknown_strategy_is_a_clear_error(tmp_path):
    p = pipeline(tmp_path, ScriptedLLM())
    with pytest.raises(InvalidRequest) as err:
        p.answer(QUESTION, KB, strategy="stuffing")
    assert err.value.field == "strategy"
    with pytest.raises(InvalidRequest):
        p.stream(QUESTION, KB, strategy="stuffing")


def test_helpers():
    assert parse_score("It lasts two years [3].\nScore: 85") == ("It lasts two years [3].", 85)
    assert parse_score("年假十五天 [1]。分数：70") == ("年假十五天 [1]。", 70)
    assert parse_score("no score here") == ("no score here", 0)
    assert keep_markers("A [1]. B [4]. C [2].", {1, 2}) == "A [1]. B. C [2]."
    from rag.types import Source
    sources = [Source(i, f"c{i}", "d", "s", "T", (), None, 0, 10, "x" * 350, 0.0) for i in range(1, 6)]
    groups = group_sources(sources, budget=250, max_per_group=3, lang="en")
    assert [[s.number for s in g] for g in groups] == [[1, 2], [3, 4], [5]]  # ~102 tokens each: two fit


# -- the edges: /v1/query, /v1/chat/completions `rag.strategy`, `rag ask --strategy` -----------------

def _app(tmp_path, llm):
    from tests.unit.api_helpers import make_app

    app, _ = make_app(tmp_path, llm=llm, strategy_group_sources=1, strategy_parallel=1)
    return app


def test_api_query_and_openai_take_a_strategy(tmp_path):
    from fastapi.testclient import TestClient

    from tests.unit.api_helpers import ADMIN

    llm = ScriptedLLM(router(map=map_reply, reduce=reduce_reply))
    with TestClient(_app(tmp_path, llm)) as client:
        r = client.post("/v1/query", json={"question": QUESTION, "kb": KB, "strategy": "map_reduce", "limit": 2},
                        headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["info"]["strategy"]["name"] == "map_reduce" and kinds(llm) == ["map", "map", "reduce"]
        bad = client.post("/v1/query", json={"question": QUESTION, "strategy": "magic"}, headers=ADMIN)
        assert bad.status_code == 422 and "strategy" in bad.text
        body = {"model": KB, "messages": [{"role": "user", "content": QUESTION}],
                "rag": {"strategy": "map_reduce", "limit": 2}}
        r = client.post("/v1/chat/completions", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert kinds(llm)[-3:] == ["map", "map", "reduce"]
        body["rag"] = {"strategy": "magic"}
        bad = client.post("/v1/chat/completions", json=body, headers=ADMIN)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "strategy"


def test_cli_ask_strategy(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.query_cmds as query_cmds
    from cli.main import app

    llm = ScriptedLLM(router(map=map_reply, reduce=reduce_reply))
    services = build_services(tmp_path, llm=llm, strategy_group_sources=1, strategy_parallel=1, answer_min_coverage=0)
    monkeypatch.setattr(query_cmds, "build_services", lambda settings: services)
    monkeypatch.setattr(services, "close", lambda: None)
    result = CliRunner().invoke(app, ["ask", QUESTION, "--kb", KB, "--strategy", "map_reduce", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "strategy map_reduce (3 LLM calls)" in result.stderr and "[2]" in result.stdout
    bad = CliRunner().invoke(app, ["ask", QUESTION, "--kb", KB, "--strategy", "magic"])
    assert bad.exit_code == 2 and "unknown strategy" in bad.stderr


def test_map_reduce_with_one_answering_group_needs_no_reduce(tmp_path):
    def one(messages):
        number, text = blocks(messages)[0]
        return map_reply(messages) if number == 1 else "I could not find this in the documents."

    llm = ScriptedLLM(router(map=one))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=3)
    assert kinds(llm) == ["map"] * 3 and not answer.refused
    assert [c.source_number for c in answer.citations if c.origin == "model"] == [1]
    assert answer.info["strategy"]["partials"] == 1 and answer.info["strategy"]["llm_calls"] == 3


def test_unsupported_partial_answers_are_dropped_before_the_reduce(tmp_path):
    def maps(messages):
        number, text = blocks(messages)[0]
        # the model writes no marker; source 2's partial answer is invented
        return first_sentence(text) if number == 1 else "The moon is made of green cheese."

    llm = ScriptedLLM(router(map=maps, reduce=reduce_reply))
    answer = pipeline(tmp_path, llm).answer(QUESTION, KB, strategy="map_reduce", limit=3)
    info = answer.info["strategy"]
    assert info["unsupported_partials"] == 2 and info["partials"] == 1 and "reduce" not in kinds(llm)
    assert not answer.refused and [c.source_number for c in answer.citations if c.origin == "model"] == [1]


def test_cite_single():
    from rag.strategies import cite_single
    from rag.types import Source

    one = [Source(4, "c", "d", "s", "T", (), None, 0, 1, "x", 0.0)]
    assert cite_single("It lasts two years. It covers defects.", one) == "It lasts two years [4]. It covers defects [4]."
    assert cite_single("It lasts two years [2].", one) == "It lasts two years [2]."
    assert cite_single("It lasts.", one * 2) == "It lasts."
