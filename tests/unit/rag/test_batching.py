"""Micro-batching: concurrent calls made while the model is busy share one model call; each caller
gets exactly its own results; errors reach every caller of the failed call; a lone caller runs at
once. Real threads, a blocking fake model to make the overlap deterministic."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.batching import BatchingEmbedder, BatchingReranker, MicroBatcher
from rag.testing import HashEmbedder


class GatedModel:
    """Squares numbers; the first call blocks until `gate` is set, so others queue behind it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(10)
        return [x * x for x in items]


def _run_threads(target, args_list):
    results, threads = {}, []
    for args in args_list:
        t = threading.Thread(target=lambda a=args: results.__setitem__(a, target(a)))
        threads.append(t)
        t.start()
    return results, threads


def _queued(batcher: MicroBatcher, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(batcher._queue) < n:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_lone_call_runs_at_once_and_queued_calls_share_the_next_model_call():
    model = GatedModel()
    batcher = MicroBatcher(model, max_items=64)
    first, threads = _run_threads(lambda a: batcher.run([a]), [1])
    assert model.entered.wait(10)
    rest, more = _run_threads(lambda a: batcher.run([a, a + 100]), [2, 3, 4, 5])
    _queued(batcher, 4)
    model.gate.set()
    for t in threads + more:
        t.join(10)
    assert first == {1: [1]}
    assert rest == {a: [a * a, (a + 100) ** 2] for a in (2, 3, 4, 5)}
    assert len(model.batches) == 2 and model.batches[0] == [1]
    assert sorted(model.batches[1]) == sorted([2, 102, 3, 103, 4, 104, 5, 105])
    assert batcher.calls == 2 and batcher.requests == 5


def test_batches_respect_max_items_and_every_caller_is_served():
    model = GatedModel()
    batcher = MicroBatcher(model, max_items=3)
    _, first = _run_threads(lambda a: batcher.run([a]), [0])
    assert model.entered.wait(10)
    results, threads = _run_threads(lambda a: batcher.run([a]), list(range(1, 8)))
    _queued(batcher, 7)
    model.gate.set()
    for t in first + threads:
        t.join(10)
    assert results == {a: [a * a] for a in range(1, 8)}
    assert all(len(b) <= 3 for b in model.batches)
    assert sum(len(b) for b in model.batches) == 8


def test_an_error_reaches_every_caller_of_that_call_and_the_batcher_recovers():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 2:
            raise RuntimeError("model crashed")
        if len(calls) == 1:
            time.sleep(0.2)
        return items

    batcher = MicroBatcher(flaky)
    errors, threads = [], []
    first = threading.Thread(target=lambda: batcher.run(["a"]))
    first.start()
    time.sleep(0.05)
    for x in ("b", "c"):
        def work(x=x):
            try:
                batcher.run([x])
            except RuntimeError as exc:
                errors.append(str(exc))
        threads.append(threading.Thread(target=work))
        threads[-1].start()
    for t in [first, *threads]:
        t.join(10)
    assert errors == ["model crashed", "model crashed"]
    assert batcher.run(["d"]) == ["d"]


def test_max_wait_collects_company_when_idle():
    batches = []
    batcher = MicroBatcher(lambda items: batches.append(list(items)) or items, max_wait=0.3)
    results, threads = _run_threads(lambda a: batcher.run([a]), ["x", "y", "z"])
    for t in threads:
        t.join(10)
    assert results == {"x": ["x"], "y": ["y"], "z": ["z"]}
    assert len(batches) == 1 and sorted(batches[0]) == ["x", "y", "z"]


def test_batching_embedder_gives_each_caller_its_own_vectors():
    inner = HashEmbedder(dim=32)
    embedder = BatchingEmbedder(inner)
    texts = [f"question number {i}" for i in range(12)]
    results, threads = _run_threads(lambda t: embedder.encode_queries([t, t.upper()]), texts)
    for t in threads:
        t.join(10)
    for text in texts:
        np.testing.assert_allclose(results[text], inner.encode_queries([text, text.upper()]), rtol=1e-6)
    assert embedder.encode_queries([]).shape == (0, 32)
    assert embedder.name == inner.name and embedder.dim == 32
    np.testing.assert_allclose(embedder.encode_corpus(["p"]), inner.encode_corpus(["p"]))


def test_batching_reranker_scores_pairs_of_several_queries_in_one_call():
    class PairScorer:
        name = "pairs"

        def __init__(self):
            self.calls = []
            self.gate = threading.Event()

        def score_pairs(self, pairs):
            self.calls.append(list(pairs))
            if len(self.calls) == 1:
                assert self.gate.wait(10)
            return [len(q) / 100 + len(p) / 1000 for q, p in pairs]

        def warm_up(self):
            pass

    inner = PairScorer()
    reranker = BatchingReranker(inner)
    first = threading.Thread(target=lambda: reranker.score("q", ["a"]))
    first.start()
    while not inner.calls:
        time.sleep(0.005)
    results, threads = _run_threads(lambda q: reranker.score(q, ["p1", "passage two"]), ["qq", "qqq"])
    _queued(reranker.batcher, 2)
    inner.gate.set()
    for t in [first, *threads]:
        t.join(10)
    assert results["qq"] == pytest.approx([0.022, 0.031]) and results["qqq"] == pytest.approx([0.032, 0.041])
    assert len(inner.calls) == 2 and len(inner.calls[1]) == 4


def test_factory_wires_batching_from_settings(tmp_path):
    from rag.factory import build_services
    from rag.settings import load_settings

    on = build_services(load_settings(data_dir=tmp_path / "a"), embedder=HashEmbedder(dim=8))
    assert isinstance(on.embedder, BatchingEmbedder) and on.embedder.inner is on.embedder_resolution.embedder
    off = build_services(load_settings(data_dir=tmp_path / "b", batch_queries=False),
                         embedder=HashEmbedder(dim=8))
    assert isinstance(off.embedder, HashEmbedder)
    with pytest.raises(ValueError):
        MicroBatcher(lambda x: x, max_items=0)
