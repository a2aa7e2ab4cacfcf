"""Metrics against hand-computed values (the arithmetic is spelled out in the comments)."""

import math

import numpy as np
import pytest

from eval.datasets import GoldAnswer
from eval.metrics import (
    CitedSpan,
    answer_accuracy,
    answer_contains_gold,
    answer_metrics,
    answer_tokens,
    chunk_contains_answer,
    citation_correct,
    containment_form,
    dedupe_docs,
    exact_match,
    f1_score,
    hit_at_k,
    latency_summary,
    ndcg_at_k,
    paired_bootstrap,
    rank_by_score,
    recall_at_k,
    reciprocal_rank,
    refusal_rate,
    retrieval_metrics,
)

L3 = 1 / math.log2(3)  # discount at rank 2 = 0.6309
L5 = 1 / math.log2(5)  # discount at rank 4 = 0.4307


def test_single_relevant_at_rank_two_of_two_relevant():
    ranking = [False, True, False, True, False]
    assert hit_at_k(ranking, 1) == 0.0
    assert hit_at_k(ranking, 3) == 1.0
    assert reciprocal_rank(ranking, 10) == 0.5
    assert reciprocal_rank(ranking, 1) == 0.0  # MRR@1 ignores rank 2
    assert recall_at_k(ranking, 2, 3) == 0.5
    assert recall_at_k(ranking, 2, 5) == 1.0
    # DCG = 1/log2(3) + 1/log2(5) = 1.0616; IDCG = 1 + 1/log2(3) = 1.6309
    assert ndcg_at_k(ranking, 2, 10) == pytest.approx((L3 + L5) / (1 + L3))
    assert ndcg_at_k(ranking, 2, 10) == pytest.approx(0.65092, abs=1e-5)


def test_no_relevant_result():
    ranking = [0, 0, 0]
    assert hit_at_k(ranking, 10) == 0.0
    assert reciprocal_rank(ranking) == 0.0
    assert recall_at_k(ranking, 1, 10) == 0.0
    assert ndcg_at_k(ranking, 1, 10) == 0.0
    assert recall_at_k([], 1, 10) == 0.0 and ndcg_at_k([], 1, 10) == 0.0
    # a query without any relevant item scores 0, not a division error
    assert recall_at_k([True], 0, 10) == 0.0 and ndcg_at_k([True], 0, 10) == 0.0


def test_several_relevant_documents_and_cutoff():
    ranking = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # third relevant doc at rank 11
    assert recall_at_k(ranking, 3, 10) == pytest.approx(2 / 3)
    # DCG@10 = 1 + 1/log2(3); IDCG@10 = 1 + 1/log2(3) + 1/log2(4) = 2.1309
    assert ndcg_at_k(ranking, 3, 10) == pytest.approx((1 + L3) / (1 + L3 + 0.5))
    assert ndcg_at_k(ranking, 3, 10) == pytest.approx(0.76536, abs=1e-5)
    # ideal DCG is cut at k too: with k=2 both relevant hits at the top is perfect
    assert ndcg_at_k(ranking, 3, 2) == pytest.approx(1.0)


def test_graded_ndcg():
    ranking = [1.0, 0.0, 2.0]
    # DCG = 1/log2(2) + 2/log2(4) = 2; ideal [2, 1]: IDCG = 2 + 1/log2(3) = 2.6309
    assert ndcg_at_k(ranking, 2, 10, ideal_gains=[1.0, 2.0]) == pytest.approx(2 / (2 + L3))
    assert ndcg_at_k(ranking, 2, 10, ideal_gains=[1.0, 2.0]) == pytest.approx(0.76018, abs=1e-5)
    assert ndcg_at_k([2.0, 1.0], 2, 10, ideal_gains=[1.0, 2.0]) == pytest.approx(1.0)
    # tied grades in the ideal ranking: order among equals does not matter
    assert ndcg_at_k([0, 2, 2], 2, 10, ideal_gains=[2, 2]) == pytest.approx((2 * L3 + 1) / (2 + 2 * L3))


def test_ties_in_scores_are_broken_by_id():
    ranked = rank_by_score({"b": 0.5, "c": 0.9, "a": 0.5, "d": 0.1})
    assert ranked == ["c", "a", "b", "d"]
    relevant = {"b"}
    # relevant doc b tied with a: the deterministic order puts it at rank 3
    assert reciprocal_rank([d in relevant for d in ranked]) == pytest.approx(1 / 3)


def test_dedupe_docs_first_appearance_order():
    chunk_docs = ["d2", "d2", "d1", "d3", "d1", "d2"]
    assert dedupe_docs(chunk_docs) == ["d2", "d1", "d3"]
    relevant = {"d1"}
    ranking = [d in relevant for d in dedupe_docs(chunk_docs)]
    assert reciprocal_rank(ranking) == 0.5  # rank 2 among documents, not 3 among chunks
    assert ndcg_at_k(ranking, 1, 10) == pytest.approx(L3)


def test_answer_chunk_level_counts_the_answer_once():
    ranking = [False, True, True]  # two chunks contain the answer, n_relevant = 1
    assert recall_at_k(ranking, 1, 3) == 1.0
    assert ndcg_at_k(ranking, 1, 3) == pytest.approx(L3)  # second relevant chunk earns nothing


def test_retrieval_metrics_aggregate_and_rows():
    result = retrieval_metrics([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], [2, 1, 1])
    assert result["n"] == 3
    first = result["per_query"][0]
    assert set(first) == {"hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10", "recall@5", "recall@10"}
    assert first["mrr@10"] == 0.5 and first["recall@5"] == 1.0
    agg = result["aggregate"]
    assert agg["hit@1"] == pytest.approx(1 / 3)
    assert agg["hit@3"] == pytest.approx(2 / 3)
    assert agg["mrr@10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert agg["ndcg@10"] == pytest.approx(((L3 + L5) / (1 + L3) + 1 + 0) / 3)
    graded = retrieval_metrics([[1.0, 0.0, 2.0]], [2], ideal_gains=[[2.0, 1.0]])
    assert graded["aggregate"]["ndcg@10"] == pytest.approx(2 / (2 + L3))
    with pytest.raises(ValueError):
        retrieval_metrics([[1]], [1, 1])
    assert retrieval_metrics([], [])["aggregate"] == {}


GOLD = [GoldAnswer("droplets", 10, "doc")]  # answer span [10, 18)


@pytest.mark.parametrize(
    ("doc", "start", "end", "expected"),
    [
        ("doc", 10, 18, True),  # chunk is exactly the answer
        ("doc", 0, 18, True),  # answer ends exactly at the chunk end
        ("doc", 10, 40, True),  # answer starts exactly at the chunk start
        ("doc", 11, 40, False),  # first character outside
        ("doc", 0, 17, False),  # last character outside
        ("doc", 18, 40, False),  # chunk starts where the answer ends
        ("other", 0, 40, False),  # right span, wrong document
    ],
)
def test_chunk_contains_answer_by_offsets(doc, start, end, expected):
    assert chunk_contains_answer(doc, start, end, "irrelevant text", GOLD) is expected


def test_offsets_decide_even_when_the_words_appear_elsewhere():
    assert chunk_contains_answer("doc", 30, 60, "also spread by droplets", GOLD) is False
    # without chunk offsets, normalised text containment is used
    assert chunk_contains_answer("doc", None, None, "Also spread by DROPLETS", GOLD) is True


def test_chunk_contains_answer_by_normalised_text():
    gold = [GoldAnswer("Hello   World", None, "doc"), GoldAnswer("潜伏期", None, "doc")]
    assert chunk_contains_answer("doc", 0, 100, "they say ｈｅｌｌｏ\nworld!", gold) is True
    assert chunk_contains_answer("doc", 0, 100, "平均潜伏期为五天", gold) is True
    assert chunk_contains_answer("doc", 0, 100, "hello there world", gold) is False
    assert chunk_contains_answer("doc", 0, 100, "anything", [GoldAnswer("  ", None, "doc")]) is False


def test_citation_correct():
    good = CitedSpan("doc", 5, 25, "... droplets ...")
    bad = CitedSpan("doc", 30, 60, "unrelated")
    assert citation_correct([bad, good], GOLD) is True
    assert citation_correct([bad], GOLD) is False
    assert citation_correct([], GOLD) is False


def test_english_normalisation_and_f1():
    assert answer_tokens("The 5 days, an hour!", "en") == ["5", "days", "hour"]
    assert exact_match("The 5 days!", ["5 days"]) == 1.0
    assert exact_match("about 5 days", ["5 days"]) == 0.0
    # pred [incubation, period, is, 5, days] vs gold [incubation, period, of, 5, days]:
    # 4 common tokens, P = R = 4/5, F1 = 0.8
    assert f1_score("The incubation period is 5 days.", ["an incubation period of 5 days"]) == pytest.approx(0.8)
    assert f1_score("", ["5 days"]) == 0.0
    assert f1_score("nothing shared", ["5 days"]) == 0.0


def test_chinese_character_f1():
    # gold 光荣和ω-force -> [光, 荣, 和, ωforce]; pred adds 公, 司: P = 4/6, R = 1, F1 = 0.8
    assert answer_tokens("光荣和ω-force", "zh") == ["光", "荣", "和", "ωforce"]
    assert f1_score("光荣和ω-force公司", ["光荣和ω-force"]) == pytest.approx(0.8)
    assert exact_match("《战国无双3》。", ["战国无双3"]) == 1.0  # Chinese punctuation removed
    # max over golds: vs 村雨城 P = 3/5, R = 1 -> 0.75; vs 任天堂游戏谜之村雨城 P = 1, R = 1/2 -> 0.667
    assert f1_score("谜之村雨城", ["村雨城", "任天堂游戏谜之村雨城"]) == pytest.approx(0.75)
    assert exact_match("ＡＢＣ", ["abc"]) == 1.0  # NFKC full-width


def test_answer_contains_gold_and_answer_metrics():
    assert answer_contains_gold("It spreads mainly by droplets [1].", ["droplets"]) == 1.0
    assert answer_contains_gold("It spreads by drop lets", ["droplets"]) == 0.0
    assert answer_contains_gold("由光荣和ω-force开发。", ["光荣和ω-force"]) == 1.0
    assert answer_contains_gold("anything", [""]) == 0.0
    result = answer_metrics(["5 days", "光荣和ω-force公司"], [["5 days"], ["光荣和ω-force"]])
    assert result["per_query"][1] == {"em": 0.0, "f1": pytest.approx(0.8), "contains": 1.0}
    assert result["aggregate"] == {"em": 0.5, "f1": pytest.approx(0.9), "contains": 1.0}
    with pytest.raises(ValueError):
        answer_metrics(["a"], [])


def test_refusal_rate():
    assert refusal_rate([True, False, False, True]) == 0.5
    assert refusal_rate([]) == 0.0


def test_latency_summary_linear_percentiles():
    rows = [{"retrieve": 1, "generate": 2}, {"retrieve": 2}, {"retrieve": 3, "generate": 4}, {"retrieve": 4}]
    summary = latency_summary(rows)
    # [1, 2, 3, 4]: p50 = 2.5, p95 = 1 + 0.95 * 3 = 3.85
    assert summary["retrieve"] == {"p50": 2.5, "p95": pytest.approx(3.85), "mean": 2.5}
    # [2, 4]: p50 = 3, p95 = 2 + 0.95 * 2 = 3.9
    assert summary["generate"] == {"p50": 3.0, "p95": pytest.approx(3.9), "mean": 3.0}
    assert latency_summary([]) == {}


# -- accuracy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "answers", "all_of", "expected"),
    [
        ("The outbreak infected 1,313,851 people.", ["1313851"], (), 1.0),  # thousands separators
        ("共有1313851人感染。", ["1,313,851"], (), 1.0),
        ("共有１，３１３，８５１人", ["1313851"], (), 1.0),  # full-width digits and comma
        ("答案是：北京 大学。", ["北京大学"], (), 1.0),  # punctuation and spaces ignored in Chinese
        ("ＡＢＣ公司", ["abc公司"], (), 1.0),  # full-width letters, case
        ("about 100 cases", ["10"], (), 0.0),  # numbers match whole
        ("10, 20 and 30 cases", ["10"], (), 1.0),
        ("Mount Etna!", ["etna", "vesuvius"], (), 1.0),  # any alternative
        ("It is in Sicily.", ["etna"], (), 0.0),
        ("China, Japan and Australia", [], [["China", "中国"], ["Japan"], ["Australia"]], 1.0),
        ("中国、日本和澳大利亚", [], [["China", "中国"], ["日本", "Japan"], ["澳大利亚"]], 1.0),
        ("China and Japan", ["China"], [["China"], ["Japan"], ["Australia"]], 0.0),  # all_of wins over answers
        ("131万人", [], [["1313851", "131万"]], 1.0),
        ("", ["x"], (), 0.0),
    ],
)
def test_answer_accuracy(prediction, answers, all_of, expected):
    assert answer_accuracy(prediction, answers, all_of) == expected


def test_containment_form():
    assert containment_form("Hello,  World! 1,000,000") == "hello world 1000000"
    assert containment_form("北京 大学， 2020年") == "北京大学2020年"
    assert containment_form("1,5 and 2020,2021") == "1 5 and 2020 2021"  # not thousands groups


# -- paired bootstrap ------------------------------------------------------------------------


def test_bootstrap_interval_contains_the_true_difference():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 400)
    other = np.clip(base + 0.1 + rng.normal(0, 0.15, 400), -5, 5)  # true mean difference 0.1
    stats = paired_bootstrap(base, other, resamples=5000, seed=7)
    assert stats["low"] < 0.1 < stats["high"] and stats["low"] > 0.0
    assert stats["high"] - stats["low"] < 0.06
    assert stats["mean"] == pytest.approx(float(np.mean(other - base)))
    assert stats["wins"] + stats["ties"] + stats["losses"] == stats["n"] == 400
    assert paired_bootstrap(base, other, resamples=5000, seed=7) == stats  # seeded: reproducible


def test_bootstrap_of_identical_configs_is_zero_and_counts_ties():
    scores = [0.0, 1.0, 0.5, 0.25, 1.0]
    assert paired_bootstrap(scores, scores) == {"n": 5, "mean": 0.0, "low": 0.0, "high": 0.0, "wins": 0,
                                                "ties": 5, "losses": 0}
    stats = paired_bootstrap([1.0, 0.0, 0.5], [0.0, 1.0, 0.5], resamples=100)
    assert (stats["wins"], stats["ties"], stats["losses"]) == (1, 1, 1)
    assert paired_bootstrap([], [])["n"] == 0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])
