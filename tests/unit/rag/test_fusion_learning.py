"""Learning the convex fusion's dense share per knowledge base from verified answers: the choice
of α against hand-built samples, the kept file (another process reads it, the oldest go, a damaged
file starts afresh, a drop deletes it), and end to end through the answer path: verified answers
teach, an evaluation does not, `convex_fixed` ignores what was learnt."""

from __future__ import annotations

import json
import logging

import pytest

from rag.adapters.llm_fake import ScriptedLLM
from rag.fusion import RankedList, convex
from rag.fusion_learning import GRID, KEEP, MIN_ANSWERS, FusionLearner, LearnedAlpha, choose_alpha, useful_rank
from rag.types import ScoredId
from tests.unit.kb_fixtures import KB, build_services, router

ANSWER = "The Acme X200 warranty lasts two years from the date of purchase [1]."
QUESTION = "how long is the warranty"


def sample(useful_dense: bool) -> dict:
    """Three candidates; the useful one (index 2) is the dense list's best or BM25's best."""
    parts = [[0.2, 1.0], [0.5, 0.6], [1.0, 0.1] if useful_dense else [0.1, 1.2]]
    return {"parts": parts, "useful": [2]}


def candidates(dense_first: bool) -> list[tuple[str, dict[str, float]]]:
    """Fused candidates as the retrieval stage keeps them: "u" is the useful chunk."""
    return [("a", {"dense": 0.2, "bm25": 1.0}), ("b", {"dense": 0.5, "bm25": 0.6}),
            ("u", {"dense": 1.0, "bm25": 0.1} if dense_first else {"dense": 0.1, "bm25": 1.2})]


def test_useful_rank_and_the_alpha_that_ranks_useful_chunks_highest():
    parts = sample(True)["parts"]
    assert useful_rank(parts, [2], 0.2) == 3 and useful_rank(parts, [2], 0.8) == 1
    assert useful_rank(parts, [0, 2], 0.2) == 1  # the best useful chunk counts
    assert choose_alpha([sample(True)] * 5, default=0.4) == 0.6  # the α nearest 0.4 that ranks it first
    assert choose_alpha([sample(False)] * 5, default=0.4) == 0.4  # BM25's pick: the default already ranks it first
    assert choose_alpha([{"parts": [[1.0, 1.0], [0.5, 0.5]], "useful": [0]}], default=0.4) == 0.4  # a tie
    assert set(GRID) <= {round(0.1 * i, 1) for i in range(11)}


def test_fused_parts_rebuild_the_convex_score():
    dense = RankedList("dense", "original", [ScoredId("a", 0.9), ScoredId("b", 0.7)])
    bm25 = RankedList("bm25", "original", [ScoredId("b", 8.0), ScoredId("c", 2.0)], weight=0.5)
    for f in convex([dense, bm25], {"dense": 0.3, "bm25": 0.7}):
        assert f.score == pytest.approx(0.3 * f.parts.get("dense", 0.0) + 0.7 * f.parts.get("bm25", 0.0))
    assert {f.chunk_id: f.parts for f in convex([dense, bm25], {})}["b"] == {"dense": 0.0, "bm25": 0.5}


def test_the_learner_keeps_answers_per_collection_and_moves_alpha_after_enough(tmp_path, caplog):
    learner = FusionLearner(tmp_path / "fusion", default_alpha=0.4)
    assert learner.alpha("c1") == LearnedAlpha(0.4, 0)
    assert learner.record("c1", candidates(True), ["nowhere"]) is None  # no useful chunk among them
    assert not (tmp_path / "fusion" / "c1.json").exists()
    for i in range(MIN_ANSWERS - 1):
        assert learner.record("c1", candidates(True), ["u"]) == LearnedAlpha(0.4, 0)
    assert learner.record("c1", candidates(True), ["u"]) == LearnedAlpha(0.6, MIN_ANSWERS)
    assert learner.alpha("c1") == LearnedAlpha(0.6, MIN_ANSWERS) and learner.alpha("c2") == LearnedAlpha(0.4, 0)
    other = FusionLearner(tmp_path / "fusion", default_alpha=0.4)  # another process reads the file
    assert other.alpha("c1").info() == {"fusion_alpha": 0.6, "fusion_alpha_answers": MIN_ANSWERS}
    for _ in range(KEEP):  # the users' questions change: BM25 now finds what is useful; the oldest answers go
        other.record("c1", candidates(False), ["u"])
    assert learner.alpha("c1") == LearnedAlpha(0.4, KEEP)
    kept = json.loads((tmp_path / "fusion" / "c1.json").read_text())
    assert len(kept["samples"]) == KEEP and kept["alpha"] == 0.4
    (tmp_path / "fusion" / "c1.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert learner.alpha("c1") == LearnedAlpha(0.4, 0)
        learner.record("c1", candidates(True), ["u"])
    assert "starting afresh" in caplog.text
    assert len(json.loads((tmp_path / "fusion" / "c1.json").read_text())["samples"]) == 1
    learner.forget("c1")
    assert not (tmp_path / "fusion" / "c1.json").exists() and learner.alpha("c1") == LearnedAlpha(0.4, 0)


def test_verified_answers_teach_the_knowledge_base_and_evaluations_do_not(tmp_path):
    services = build_services(tmp_path, llm=ScriptedLLM(router(answer=ANSWER)))
    pipeline, learner = services.pipeline, services.fusion_learner
    collection = services.kbs.open(KB).collection
    first = pipeline.answer(QUESTION, KB)
    assert not first.refused and any(c.supported for c in first.citations)
    assert first.info["fusion"] == "convex" and first.info["fusion_alpha"] == 0.4
    kept = json.loads((services.data_dir / "fusion" / f"{collection}.json").read_text())["samples"]
    assert len(kept) == 1 and kept[0]["useful"]
    pipeline.answer(QUESTION, KB, learn=False)  # what `rag eval --answers` does
    pipeline.answer(QUESTION, KB, fusion="rrf")  # RRF has no dense share to learn
    pipeline.answer(QUESTION, KB, mode="dense")  # one list: nothing to weigh
    assert len(json.loads((services.data_dir / "fusion" / f"{collection}.json").read_text())["samples"]) == 1
    for _ in range(MIN_ANSWERS - 1):
        pipeline.answer(QUESTION, KB)
    learned = learner.alpha(collection)
    assert learned.answers == MIN_ANSWERS and learned.alpha in GRID
    info = pipeline.retrieve(QUESTION, KB).info
    assert (info["fusion_alpha"], info["fusion_alpha_answers"]) == (learned.alpha, MIN_ANSWERS)
    fixed = pipeline.retrieve(QUESTION, KB, fusion="convex_fixed").info
    assert (fixed["fusion_alpha"], fixed["fusion_alpha_answers"]) == (0.4, 0)
    services.kbs.drop(KB)
    assert not (services.data_dir / "fusion" / f"{collection}.json").exists()
