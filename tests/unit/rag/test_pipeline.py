"""The whole answering pipeline with a scripted LLM: answers with mapped and verified citations,
refusal and its language, retrieval-only answers, streaming order and failures, the LLM
endpoint being down, and the `rag ask` command."""

from __future__ import annotations

import json

import pytest

from rag import prompts
from rag.adapters.llm_fake import ScriptedLLM
from rag.adapters.llm_openai import OpenAICompatLLM
from rag.errors import InvalidRequest, LLMError, NotFound
from rag.pipeline import STAGES
from rag.serialize import answer_to_dict
from rag.retrieval import parse_filter
from tests.unit.kb_fixtures import KB, build_services, kind_of, router

WARRANTY_ANSWER = ("The Acme X200 warranty lasts two years from the date of purchase [1]. "
                   "It covers manufacturing defects [1, 9]. Water damage is not covered [1].")


def test_answer_with_citations_mapped_and_verified(tmp_path):
    llm = ScriptedLLM(router(answer=WARRANTY_ANSWER))
    answer = build_services(tmp_path, llm=llm).pipeline.answer("How long is the Acme X200 warranty?", KB)
    assert not answer.refused and answer.model == "scripted-llm"
    assert answer.answer == ("The Acme X200 warranty lasts two years from the date of purchase [1]. "
                             "It covers manufacturing defects [1]. Water damage is not covered [1].")
    assert answer.info["invalid_citations"] == [9]
    assert [c.chunk_id for c in answer.citations] == ["warranty"] * 3
    assert all(c.supported for c in answer.citations) and answer.info["verification"]["supported"] == 3
    assert answer.sources[0].chunk_id == "warranty" and answer.sources[0].page == 12
    # every returned source is exactly one the model was shown, under the same number
    prompt = llm.last_messages[-1]["content"]
    for s in answer.sources:
        assert f"[{s.number}] {s.title}" in prompt and s.text in prompt
    assert f"[{len(answer.sources) + 1}]" not in prompt
    assert set(STAGES) <= set(answer.timings) and answer.timings["total"] >= answer.timings["generate"]
    assert answer.info["context"]["sources"] == len(answer.sources)


def test_answer_language_follows_the_question(tmp_path):
    llm = ScriptedLLM(router(answer="员工每年享有十五天带薪年假[1]。"))
    answer = build_services(tmp_path, llm=llm).pipeline.answer("员工每年有几天年假？", KB)
    assert llm.last_messages[0]["content"] == prompts.ANSWER_SYSTEM["zh"]
    assert answer.sources[0].chunk_id == "leave" and answer.citations[0].supported
    assert answer.info["language"] == "zh"


def test_uncited_claims_are_attributed_to_the_source_that_supports_them(tmp_path):
    # small models often write a correct answer with no marker, or a wrong number
    llm = ScriptedLLM(router(answer="The Acme X200 warranty lasts two years from the date of purchase. "
                                    "A full charge of the battery takes ninety minutes [1]."))
    answer = build_services(tmp_path, llm=llm).pipeline.answer("How long is the Acme X200 warranty?", KB)
    assert not answer.refused
    by_sentence = {(c.sentence[:20], c.origin): c for c in answer.citations}
    warranty = by_sentence[("The Acme X200 warran", "attributed")]
    assert warranty.chunk_id == "warranty" and warranty.supported and warranty.number == 1
    wrong = by_sentence[("A full charge of the", "model")]  # the model's [1] is the warranty: unsupported
    assert wrong.chunk_id == "warranty" and wrong.supported is False
    battery = by_sentence[("A full charge of the", "attributed")]
    assert battery.chunk_id == "battery" and battery.supported
    assert answer.info["grounding"] == {"claims": 2, "supported_claims": 2, "attributed": 2}
    data = answer_to_dict(answer)
    assert {c["origin"] for c in data["citations"]} == {"model", "attributed"}
    # the answer text is what the model wrote: attributed citations live in the citation list
    assert answer.answer.startswith("The Acme X200 warranty lasts two years from the date of purchase. A full")
    assert data["answer_with_citations"] == ("The Acme X200 warranty lasts two years from the date of purchase [1]. "
                                             f"A full charge of the battery takes ninety minutes [1] [{battery.number}].")


def test_an_answer_no_source_supports_is_replaced_by_the_refusal(tmp_path):
    invented = "The capital of France is Paris, a city on the river Seine [1]."
    llm = ScriptedLLM(router(answer=invented))
    answer = build_services(tmp_path, llm=llm).pipeline.answer("What is the capital of France?", KB)
    assert answer.refused and answer.answer == prompts.REFUSAL["en"] and answer.citations == []
    assert answer.info["refusal_reason"] == "unsupported_answer"
    assert answer.info["unsupported_answer"] == invented
    assert answer.info["grounding"]["claims"] == 1 and answer.info["grounding"]["supported_claims"] == 0

    kept = build_services(tmp_path / "off", llm=ScriptedLLM(router(answer=invented)),
                                   refuse_unsupported=False).pipeline.answer("What is the capital of France?", KB)
    assert not kept.refused and kept.answer == invented and kept.citations[0].supported is False


def test_streaming_ends_with_the_refusal_when_no_source_supports_the_answer(tmp_path):
    llm = ScriptedLLM(router(answer="The capital of France is Paris, a city on the river Seine."))
    events = list(build_services(tmp_path, llm=llm).pipeline.stream("What is the capital of France?", KB))
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert streamed.startswith("The capital of France is Paris")  # the tokens went out as they came
    done = events[-1]
    assert done["type"] == "done" and done["answer"]["refused"] and done["answer"]["answer"] == prompts.REFUSAL["en"]
    assert done["answer"]["info"]["refusal_reason"] == "unsupported_answer"


@pytest.mark.parametrize("question,expected", [("What is the boiling point of mercury?", prompts.REFUSAL["en"]),
                                               ("水银的沸点是多少？", prompts.REFUSAL["zh"])])
def test_no_hits_refuses_in_the_question_language_without_the_llm(tmp_path, question, expected):
    llm = ScriptedLLM([])
    flt = parse_filter(["source=missing.pdf"])
    answer = build_services(tmp_path, llm=llm).pipeline.answer(question, KB, flt=flt)
    assert answer.refused and answer.answer == expected and llm.calls == []
    assert answer.info["refusal_reason"] == "no_hits"


def test_model_refusal_is_detected(tmp_path):
    llm = ScriptedLLM(router(answer=prompts.REFUSAL["en"]))
    answer = build_services(tmp_path, llm=llm).pipeline.answer("What is the CEO's salary?", KB)
    assert answer.refused and answer.citations == [] and answer.info["refusal_reason"] == "model_refused"
    assert answer.sources  # the sources the model saw are still reported


def test_generate_false_returns_retrieval_only(tmp_path):
    llm = ScriptedLLM([])
    answer = build_services(tmp_path, llm=llm).pipeline.answer("warranty", KB, generate=False, limit=3)
    assert answer.answer == "" and not answer.refused and llm.calls == []
    assert [s.number for s in answer.sources] == [1, 2, 3] and answer.sources[0].chunk_id == "warranty"
    assert answer.info["generated"] is False
    json.dumps(answer_to_dict(answer))


def test_small_context_window_packs_fewer_sources(tmp_path):
    llm = ScriptedLLM(router(answer="Two years [1]."))
    services = build_services(tmp_path, llm=llm, llm_context_window=640, llm_max_tokens=256)
    answer = services.pipeline.answer("warranty battery reset passwords", KB, limit=7, strategy="stuff")
    context = answer.info["context"]
    assert context["used_tokens"] <= context["budget_tokens"] < 640 - 256
    assert len(answer.sources) < 7 and context["left_out"] >= 1


def test_stream_event_order_and_same_data_as_done(tmp_path):
    llm = ScriptedLLM(router(answer=WARRANTY_ANSWER))
    events = list(build_services(tmp_path, llm=llm).pipeline.stream("How long is the warranty?", KB))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "retrieval" and kinds[-3:] == ["sources", "citations", "done"]
    assert set(kinds[1:-3]) == {"token"} and len(kinds) > 10
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    done = events[-1]["answer"]
    assert streamed == done["answer"] and "[9]" not in streamed
    assert events[-2]["citations"] == done["citations"] and len(done["citations"]) == 3
    assert events[-3]["sources"] == done["sources"]
    assert [s["chunk_id"] for s in events[0]["sources"]] == [s["chunk_id"] for s in done["sources"]]
    assert "first_token" in events[-1]["timings"] and llm.calls[0]["stream"] is True


def test_stream_refusal_emits_the_refusal_as_one_token(tmp_path):
    events = list(build_services(tmp_path, llm=ScriptedLLM([])).pipeline.stream(
        "年假？", KB, flt=parse_filter(["team=nobody"])))
    assert [e["type"] for e in events] == ["retrieval", "token", "sources", "citations", "done"]
    assert events[1]["text"] == prompts.REFUSAL["zh"] and events[-1]["answer"]["refused"]


class BreakingLLM(ScriptedLLM):
    def stream(self, messages, **kwargs):
        self.calls.append({"messages": messages, "stream": True})
        yield "The warranty "
        yield "lasts [1"
        raise LLMError("LLM endpoint http://llm:8000/v1 connection failed: reset by peer")


def test_llm_failure_mid_stream_ends_with_an_error_event(tmp_path):
    events = list(build_services(tmp_path, llm=BreakingLLM()).pipeline.stream("warranty?", KB))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "retrieval" and set(kinds[1:-1]) == {"token"} and kinds[-1] == "error"
    assert "".join(e["text"] for e in events[1:-1]) == "The warranty lasts"  # "[1" was never completed
    assert events[-1] == {"type": "error", "code": "llm_unavailable",
                          "message": "LLM endpoint http://llm:8000/v1 connection failed: reset by peer"}


def test_stream_validates_before_the_first_event(tmp_path):
    pipeline = build_services(tmp_path).pipeline
    with pytest.raises(NotFound):
        pipeline.stream("warranty", "no-such-kb")
    with pytest.raises(InvalidRequest):
        pipeline.stream(" ", KB)


def test_transforms_and_answer_use_one_llm(tmp_path):
    llm = ScriptedLLM(router(hyde="The Acme X200 warranty is valid for two years.", answer="Two years [1]."))
    answer = build_services(tmp_path, llm=llm).pipeline.answer("warranty?", KB, transforms=["hyde"])
    assert [kind_of(c["messages"]) for c in llm.calls] == ["hyde", "answer"]
    assert [v["label"] for v in answer.query_variants] == ["original", "hyde"]


def test_llm_endpoint_down_names_the_endpoint(tmp_path):
    llm = OpenAICompatLLM("http://127.0.0.1:9/v1", model="m", timeout=3, max_retries=0)
    pipeline = build_services(tmp_path, llm=llm).pipeline
    with pytest.raises(LLMError, match=r"http://127\.0\.0\.1:9/v1"):
        pipeline.answer("warranty", KB)
    assert pipeline.answer("warranty", KB, generate=False).sources  # retrieval still works
    events = list(pipeline.stream("warranty", KB))
    assert [e["type"] for e in events] == ["retrieval", "error"] and "127.0.0.1:9" in events[-1]["message"]
    # a failing transform degrades instead of failing the request
    result = pipeline.retrieve("warranty", KB, transforms=["rewrite"])
    assert result.hits and "127.0.0.1:9" in result.info["warnings"][0]


# -- the CLI ---------------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.query_cmds as query_cmds
    from cli.main import app

    state = {"llm": ScriptedLLM(router(answer=WARRANTY_ANSWER))}
    services = build_services(tmp_path, dim=256)
    monkeypatch.setattr(query_cmds, "build_services", lambda settings: services)
    monkeypatch.setattr(services, "close", lambda: None)  # the command closes what it opened
    monkeypatch.setattr(type(services), "llm", property(lambda self: state["llm"]), raising=False)

    def run(*args):
        return CliRunner().invoke(app, ["ask", *args])

    run.state = state
    return run


def test_cli_ask_prints_answer_sources_and_verification(cli):
    result = cli("How long is the Acme X200 warranty?", "--kb", KB)
    assert result.exit_code == 0, result.output
    assert "The Acme X200 warranty lasts two years from the date of purchase [1]." in result.stdout
    assert "[1] acme-x200-manual.pdf · Warranty · page 12 · chars 0-160  [3/3 citation(s) verified]" in result.stdout
    assert "reranking: off" in result.stderr


def test_cli_ask_says_why_it_refused(cli):
    result = cli("Which river does the Elbonian capital stand on?", "--kb", KB, "--filter", "team=support")
    assert result.exit_code == 0, result.output
    assert "I could not find this in the documents." in result.stdout
    assert ("(refused: no retrieved source is about the question; the retrieved sources state 0% of the "
            "question's terms (under 50%))") in result.stderr


def test_cli_ask_json_stream_and_no_generate(cli):
    data = json.loads(cli("warranty?", "--kb", KB, "--json").stdout)
    assert data["citations"][0]["document"] == "acme-x200-manual.pdf" and data["rerank_enabled"] is False
    streamed = cli("warranty?", "--kb", KB, "--stream", "--sources")
    assert streamed.exit_code == 0 and "It covers manufacturing defects [1]." in streamed.stdout
    assert "[2] " in streamed.stdout  # --sources lists uncited sources with their text too
    events = [json.loads(line) for line in cli("warranty?", "--kb", KB, "--stream", "--json").stdout.splitlines()]
    assert events[0]["type"] == "retrieval" and events[-1]["type"] == "done"
    hits = cli("warranty?", "--kb", KB, "--no-generate", "--mode", "bm25", "--filter", "team=support")
    assert hits.exit_code == 0 and "bm25:original#1" in hits.stdout and "dense:" not in hits.stdout


@pytest.mark.parametrize("args,code,message", [
    (["warranty", "--kb", KB, "--filter", "team"], 2, "invalid filter 'team'"),
    (["  ", "--kb", KB], 2, "the question is empty"),
    (["warranty", "--kb", "nope"], 2, "unknown knowledge base 'nope'"),
    (["warranty", "--kb", KB, "--transform", "magic"], 2, "unknown transform"),
    (["warranty", "--kb", KB, "--mode", "fuzzy"], 2, "unknown retrieval mode"),
])
def test_cli_errors_are_one_line(cli, args, code, message):
    result = cli(*args)
    assert result.exit_code == code and message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_cli_llm_down_suggests_no_generate(cli):
    cli.state["llm"] = OpenAICompatLLM("http://127.0.0.1:9/v1", model="m", timeout=3, max_retries=0)
    for extra in ([], ["--stream"]):
        result = cli("warranty", "--kb", KB, *extra)
        assert result.exit_code == 1 and "127.0.0.1:9" in result.stderr and "--no-generate" in result.stderr
        assert "Traceback" not in result.output


def test_decisions_travel_in_a_typed_trace_and_info_is_serialised_from_it_once(tmp_path):
    from rag.checking import AnswerChecker, CheckConfig
    from rag.trace import UNSUPPORTED_ANSWER, AnswerTrace, Refusal

    invented = "The capital of France is Paris, a city on the river Seine [1]."
    services = build_services(tmp_path, llm=ScriptedLLM(router(answer=invented)))
    pipeline = services.pipeline
    assert isinstance(pipeline.checker, AnswerChecker) and isinstance(pipeline.checker.config, CheckConfig)
    answer = pipeline.answer("What is the capital of France?", KB)
    sources = answer.sources
    outcome = pipeline.checker.after("What is the capital of France?", invented, [], sources)
    assert outcome.refusal == Refusal(UNSUPPORTED_ANSWER, invented, outcome.refusal.cited) and not outcome.citations
    # the info of the answer is exactly the trace's serialisation, with the shape it always had
    trace = AnswerTrace("en", None, checked=outcome.checked, refusal=outcome.refusal)
    assert trace.to_info()["refusal_reason"] == answer.info["refusal_reason"] == UNSUPPORTED_ANSWER
    assert {"refused_sources", "unsupported_answer", "grounding", "uncited_sentences",
            "invalid_citations", "generated", "strategy", "context", "language", "rerank"} <= set(answer.info)


def test_one_shot_stream_and_answer_from_hits_share_one_answer_path(tmp_path):
    services = build_services(tmp_path, llm=ScriptedLLM(router(answer=WARRANTY_ANSWER)))
    pipeline = services.pipeline
    one_shot = pipeline.answer("How long is the Acme X200 warranty?", KB)
    events = list(pipeline.stream("How long is the Acme X200 warranty?", KB))
    done = events[-1]["answer"]
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert streamed == done["answer"] == one_shot.answer
    assert done["info"]["invalid_citations"] == one_shot.info["invalid_citations"] == [9]
    assert len(done["citations"]) == len(one_shot.citations) > 0
    from_hits = pipeline.answer_from_hits("How long is the Acme X200 warranty?", one_shot.hits)
    assert from_hits.info["strategy"]["name"] == "stuff"  # the same strategy step as `answer`
    assert from_hits.info["invalid_citations"] == [9] and from_hits.citations
