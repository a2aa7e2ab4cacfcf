"""Reading only source [1] when the ranking singles it out (rag/single_source.py, `context_single`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rag.adapters.llm_fake import ScriptedLLM
from rag.settings import Settings
from rag.single_source import SingleRule
from rag.types import Hit, ListHit
from tests.unit.kb_fixtures import build_services, router
from tests.unit.rag.test_answer_retry import QUESTION, award_chunks

CHUNKS = {c.id: c for c in award_chunks()}


def ranked(order: list[str], ranks: list[tuple[int, int]], scores: list[float] | None = None) -> list[Hit]:
    """Hits in `order`, each with its (dense, bm25) ranks and a fused score."""
    scores = scores or [1.0 / (i + 1) for i in range(len(order))]
    return [Hit(chunk=CHUNKS[cid], score=score,
                provenance=[ListHit("dense", "original", d, 0.9), ListHit("bm25", "original", b, 7.0)])
            for cid, (d, b), score in zip(order, ranks, scores, strict=True)]


def test_the_rules_parse_and_fire_as_documented():
    assert SingleRule.parse("off") is None and SingleRule.parse(" Agree ") == SingleRule(agree=True)
    assert SingleRule.parse("agree+ratio>=1.5") == SingleRule(agree=True, ratio=1.5)
    for bad in ("", "sometimes", "ratio>=1", "ratio>=0.5", "+ratio>=2", "agree+"):
        with pytest.raises(ValueError, match="context_single must be"):
            SingleRule.parse(bad)
    agree, ratio = SingleRule(agree=True), SingleRule(ratio=1.5)
    assert agree.fires([1, 1], 0.03, 0.02) and not agree.fires([1, 2], 0.03, 0.02) and not agree.fires([1], 0.03, 0.02)
    assert ratio.fires([1, 2], 0.03, 0.02) and not ratio.fires([1, 1], 0.03, 0.025) and ratio.fires([1], 0.03, None)
    hits = ranked(["award-2019", "award-2018"], [(1, 1), (2, 2)], [0.04, 0.02])
    assert agree.singles_out(hits) and SingleRule(agree=True, ratio=2.5).singles_out(hits) is False
    hits[0].rerank_score, hits[1].rerank_score = 0.9, 0.2  # reranked: the rerank scores decide
    assert SingleRule(ratio=4.0).singles_out(hits) and not agree.singles_out([])


def test_the_setting_is_checked_at_start():
    assert Settings(_env_file=None, context_single="Agree + ratio>=1.2").context_single == "agree+ratio>=1.2"
    with pytest.raises(ValidationError, match="context_single"):
        Settings(_env_file=None, context_single="when sure")


def answering(prompts_seen: list[str]):
    def reply(messages):
        prompts_seen.append(messages[-1]["content"])
        return "Bob Jones won the Maxwell Award of 2019 [1]."
    return ScriptedLLM(router(answer=reply))


def test_only_the_top_hit_is_read_when_every_list_ranked_it_first(tmp_path):
    seen: list[str] = []
    services = build_services(tmp_path, llm=answering(seen), chunks=award_chunks(), context_single="agree")
    hits = ranked(["award-2019", "award-2018", "award-history"], [(1, 1), (2, 3), (3, 2)])
    answer = services.pipeline.answer_from_hits(QUESTION, hits)
    assert not answer.refused and [s.chunk_id for s in answer.sources] == ["award-2019"]
    assert "Alice Smith" not in seen[0] and "Bob Jones" in seen[0]
    assert answer.info["context"]["single_source"] == 2 and len(answer.hits) == 3  # all retrieved still reported


def test_every_source_is_read_when_the_lists_disagree_or_the_rule_is_off(tmp_path):
    split = ranked(["award-2019", "award-2018", "award-history"], [(1, 2), (2, 1), (3, 3)])
    seen: list[str] = []
    services = build_services(tmp_path / "agree", llm=answering(seen), chunks=award_chunks(), context_single="agree")
    answer = services.pipeline.answer_from_hits(QUESTION, split)
    assert len(answer.sources) == 3 and "single_source" not in answer.info["context"]
    agreed = ranked(["award-2019", "award-2018", "award-history"], [(1, 1), (2, 3), (3, 2)])
    off = build_services(tmp_path / "off", llm=answering(seen), chunks=award_chunks())  # the default: off
    assert len(off.pipeline.answer_from_hits(QUESTION, agreed).sources) == 3


def test_a_top_hit_moved_back_for_its_year_is_not_read_alone(tmp_path):
    # every list ranked the 2018 passage first, but the question asks for 2019: year matching puts
    # it last, so the ranking no longer singles out what the model would read first
    seen: list[str] = []
    services = build_services(tmp_path, llm=answering(seen), chunks=award_chunks(), context_single="agree")
    hits = ranked(["award-2018", "award-2019", "award-history"], [(1, 1), (2, 2), (3, 3)])
    answer = services.pipeline.answer_from_hits(QUESTION, hits)
    assert len(answer.sources) == 3 and "single_source" not in answer.info["context"]
    assert answer.sources[0].chunk_id == "award-2019"
