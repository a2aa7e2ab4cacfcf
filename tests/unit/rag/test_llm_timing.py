"""TTFT / TPOT: the timer on its own (runtime token counts vs the delta estimate), and every path of
the pipeline that generates an answer (answer, answer_from_hits, stream, a strategy's chosen text)
carrying `ttft`/`tpot` in its timings and the token counts in `info["generation"]`."""

from __future__ import annotations

import time

import pytest

from rag.adapters.llm_fake import ScriptedLLM, split_deltas
from rag.llm_timing import StreamTimer, generate_timed
from rag.pipeline import Pipeline
from tests.unit.kb_fixtures import KB, build_services, router

MSGS = [{"role": "user", "content": "hi"}]
ANSWER = "The Acme X200 warranty lasts two years from the date of purchase [1]."
DELAY = 0.003


class NoUsageLLM(ScriptedLLM):
    """A runtime that reports no token counts (the timer must estimate from the deltas)."""

    def stream(self, messages, *, max_tokens=512, temperature=0.0, stop=None, usage=None):
        yield from super().stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)


def _slow(deltas: list[str], first: float, each: float):
    time.sleep(first)
    for i, delta in enumerate(deltas):
        if i:
            time.sleep(each)
        yield delta


def test_timer_measures_first_token_and_time_per_token_from_the_runtime_count():
    timer = StreamTimer()
    out = list(timer.watch(_slow(["a", "", "b", "c"], first=0.05, each=0.01)))
    timer.usage.completion_tokens = 5  # the runtime says 5 tokens came in those 3 non-empty deltas
    gen = timer.result()
    assert out == ["a", "", "b", "c"] and gen.text == "abc"
    assert 0.05 <= gen.ttft < 0.5
    # 3 sleeps of 10 ms after the first token (the empty delta too) spread over the 4 tokens after it
    assert 0.03 / 4 <= gen.tpot < 0.5 / 4
    assert gen.output_tokens == 5 and gen.counted_by == "runtime"
    assert gen.timings() == {"ttft": gen.ttft, "tpot": gen.tpot}


def test_timer_estimates_tokens_from_deltas_and_leaves_out_what_it_cannot_measure():
    timer = StreamTimer()
    list(timer.watch(_slow(["a", "b", "c"], first=0.0, each=0.01)))
    gen = timer.result()
    assert gen.output_tokens == 3 and gen.counted_by == "deltas" and gen.tpot >= 0.01
    one = StreamTimer()
    list(one.watch(["only"]))
    assert set(one.result().timings()) == {"ttft"}  # one token: no time per token after the first
    empty = StreamTimer()
    list(empty.watch(["", ""]))
    assert empty.result().timings() == {} and empty.result().output_tokens == 0


def test_generate_timed_streams_and_joins_with_the_adapter_count():
    llm = ScriptedLLM([ANSWER, ANSWER], delta_seconds=DELAY)
    gen = generate_timed(llm, MSGS, max_tokens=7, temperature=0.0)
    assert gen.text == ANSWER and llm.calls[0]["stream"] is True and llm.calls[0]["max_tokens"] == 7
    assert gen.output_tokens == len(split_deltas(ANSWER)) and gen.counted_by == "runtime"
    assert gen.ttft >= DELAY and gen.tpot >= DELAY
    estimated = generate_timed(NoUsageLLM([ANSWER]), MSGS, max_tokens=7, temperature=0.0)
    assert estimated.counted_by == "deltas" and estimated.output_tokens == len(split_deltas(ANSWER))


def _pipeline(tmp_path, llm, **settings) -> Pipeline:
    return build_services(tmp_path, llm=llm, strategy_group_sources=1, strategy_parallel=1, **settings).pipeline


def _assert_timed(timings: dict, info: dict) -> None:
    assert timings["ttft"] >= DELAY and timings["tpot"] >= DELAY
    assert timings["ttft"] <= timings["generate"] + 1e-6
    assert info["generation"]["output_tokens"] == len(split_deltas(ANSWER))
    assert info["generation"]["output_tokens_counted_by"] == "runtime"


def test_answer_answer_from_hits_and_stream_carry_ttft_and_tpot(tmp_path):
    llm = ScriptedLLM(router(answer=ANSWER), delta_seconds=DELAY)
    p = _pipeline(tmp_path, llm)
    answer = p.answer("How long is the warranty?", KB)
    assert not answer.refused
    _assert_timed(answer.timings, answer.info)
    from_hits = p.answer_from_hits("How long is the warranty?", answer.hits)
    _assert_timed(from_hits.timings, from_hits.info)
    events = list(p.stream("How long is the warranty?", KB))
    done = events[-1]
    assert done["type"] == "done" and "first_token" in done["timings"]
    _assert_timed(done["timings"], done["answer"]["info"])
    assert [c["stream"] for c in llm.calls] == [True, True, True]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_strategy_answer_chosen_from_a_map_call_carries_that_calls_timing(tmp_path, streamed):
    llm = ScriptedLLM(router(map_rerank="The warranty lasts two years [1] Score: 80"), delta_seconds=DELAY)
    p = _pipeline(tmp_path, llm)
    if streamed:
        done = list(p.stream("How long is the warranty?", KB, strategy="map_rerank", limit=2))[-1]
        timings, info = done["timings"], done["answer"]["info"]
    else:
        answer = p.answer("How long is the warranty?", KB, strategy="map_rerank", limit=2)
        timings, info = answer.timings, answer.info
    assert info["strategy"]["chosen"] is not None
    assert timings["ttft"] >= DELAY and timings["tpot"] >= DELAY
    assert info["generation"]["output_tokens"] == len(split_deltas("The warranty lasts two years [1] Score: 80"))


def test_an_answer_without_an_llm_call_has_no_token_timings(tmp_path):
    llm = ScriptedLLM(router(answer=ANSWER))
    answer = _pipeline(tmp_path, llm).answer("How long is the warranty?", KB, generate=False)
    assert "ttft" not in answer.timings and "generation" not in answer.info and llm.calls == []


def test_the_query_benchmark_reports_ttft_and_tpot(tmp_path):
    from benchmarks.query import generation_latency

    p = _pipeline(tmp_path, ScriptedLLM(router(answer=ANSWER), delta_seconds=DELAY))
    out = generation_latency(p, KB, ["How long is the warranty?", "What does the warranty cover?"])
    assert out["questions"] == 2 and out["output_tokens_mean"] == len(split_deltas(ANSWER))
    assert set(out["seconds"]) == {"first_token", "ttft", "generate", "total"}
    assert set(out["seconds"]["ttft"]) == {"p50", "p95", "mean"}
    assert out["tpot_ms"]["p50"] >= DELAY * 1000 and out["tpot_ms"]["p95"] >= out["tpot_ms"]["p50"]
