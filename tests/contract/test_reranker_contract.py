"""One contract for every Reranker: the deterministic test rerankers, and the real adapters
(CrossEncoder and FlagReranker, alone and behind the micro-batching wrapper) over a cross-encoder
directory built from the bundled MiniLM weights (random classification head: scores are
meaningless, the code path is real; marked slow); and the remote reranker, in the TEI and the
Cohere shape, against a real `rag serve` on a loopback port serving the overlap reranker through
`/v1/rerank`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.protocols import PairReranker, Reranker
from rag.testing import minilm_cross_encoder
from rag.testing import HashEmbedder
from tests.unit.api_helpers import ADMIN_KEY, serving_models
from tests.unit.kb_fixtures import OverlapReranker, TableReranker

QUERY = "How long is the warranty?"
PASSAGES = ["The warranty lasts two years.", "Returns are accepted within thirty days.", "保修期为两年。",
            "Shipping takes three to five business days. " * 40]  # longer than max_length


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    """A BertForSequenceClassification (num_labels=1) from the bundled all-MiniLM-L6-v2 weights."""
    return minilm_cross_encoder(tmp_path_factory.mktemp("models") / "minilm-reranker")


@pytest.fixture(scope="module")
def models_url(tmp_path_factory) -> Iterator[str]:
    """A real `rag serve` (uvicorn, loopback) whose loaded reranker is the overlap reranker."""
    with serving_models(tmp_path_factory.mktemp("model-server"), HashEmbedder(64), OverlapReranker()) as url:
        yield url


def _remote(api: str) -> Callable[[str], Reranker]:
    def build(url: str) -> Reranker:
        from rag.adapters.model_servers import RemoteReranker

        return RemoteReranker(url, "overlap-reranker", api=api, api_key=ADMIN_KEY, batch_size=3, retries=0)
    return build


def _cross_encoder(path: Path) -> Reranker:
    from rag.adapters.rerankers import CrossEncoderAdapter

    return CrossEncoderAdapter(path, max_length=64, batch_size=2, device="cpu")


def _flag(path: Path) -> Reranker:
    from rag.adapters.rerankers import FlagRerankerAdapter

    return FlagRerankerAdapter(path, max_length=64, batch_size=2, device="cpu")


def _batching(path: Path) -> Reranker:
    from rag.batching import BatchingReranker

    return BatchingReranker(_cross_encoder(path), max_items=3)


FACTORIES: dict[str, Callable[..., Reranker]] = {
    "overlap": lambda p: OverlapReranker(),
    "table": lambda p: TableReranker({"warranty": 0.9, "保修": 0.7}, default=0.1),
    "cross-encoder": _cross_encoder,
    "flagreranker": _flag,
    "batching-cross-encoder": _batching,
    "remote-tei-rag-serve": _remote("tei"),
    "remote-cohere-rag-serve": _remote("cohere"),
}
REAL = {"cross-encoder", "flagreranker", "batching-cross-encoder"}
SERVED = {"remote-tei-rag-serve", "remote-cohere-rag-serve"}


@pytest.fixture(scope="module", params=[pytest.param(k, marks=pytest.mark.slow) if k in REAL else k
                                        for k in FACTORIES])
def reranker(request: pytest.FixtureRequest) -> Reranker:
    if request.param in SERVED:
        return FACTORIES[request.param](request.getfixturevalue("models_url"))
    path = request.getfixturevalue("ce_dir") if request.param in REAL else Path("unused")
    return FACTORIES[request.param](path)


def test_implements_protocol(reranker):
    assert isinstance(reranker, Reranker)
    assert isinstance(reranker.name, str) and reranker.name


def test_scores_in_zero_one_in_order(reranker):
    scores = reranker.score(QUERY, PASSAGES)
    assert len(scores) == len(PASSAGES)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert reranker.score(QUERY, PASSAGES) == pytest.approx(scores, abs=1e-6)  # deterministic
    assert reranker.score(QUERY, PASSAGES[1:2]) == pytest.approx(scores[1:2], abs=1e-5)  # batch independent


def test_the_real_adapters_score_pairs_of_several_queries(reranker):
    if not isinstance(reranker, PairReranker):
        pytest.skip("scores one query at a time (the batching wrapper needs score_pairs)")
    pairs = [(QUERY, PASSAGES[0]), ("Can I return it?", PASSAGES[1])]
    assert reranker.score_pairs(pairs) == pytest.approx([reranker.score(q, [p])[0] for q, p in pairs], abs=1e-5)
    assert reranker.score_pairs([]) == []


def test_empty_list(reranker):
    assert reranker.score(QUERY, []) == []


def test_warm_up_is_idempotent(reranker):
    before = reranker.score(QUERY, PASSAGES[:2])
    reranker.warm_up()
    reranker.warm_up()
    assert reranker.score(QUERY, PASSAGES[:2]) == pytest.approx(before, abs=1e-6)
