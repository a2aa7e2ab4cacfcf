"""Parity between the embedded lexical path (LocalBM25Index) and the server-mode one
(QdrantSparseIndex: BM25 as Qdrant sparse vectors with the IDF modifier), run on qdrant-client's
in-memory engine, which implements the same IDF formula as a Qdrant server. Also checks that RRF
fusion gives the same results on both paths, and that Qdrant's own RRF with k = c + 1 equals
`rag.fusion.rrf` with constant c (the documented server check)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from rag.adapters.bm25 import LocalBM25Index, chunk_tokens
from rag.adapters.qdrant_store import QdrantClientStore
from rag.adapters.sparse_lexical import QdrantSparseIndex, server_rrf
from rag.errors import ConfigError, StoreError
from rag.fusion import RankedList, rrf
from rag.protocols import CollectionOptions, LexicalIndex
from rag.testing import HashEmbedder
from rag.types import Chunk, Filter

EN_WORDS = ("warranty battery charge screen repair refund receipt shipping order invoice laptop phone cable "
            "adapter firmware update reset password account login network router signal speaker camera lens "
            "storage memory").split()
ZH_PHRASES = ["保修期是两年", "电池续航十二小时", "退货需要原始收据", "屏幕维修免费", "固件更新后重启", "密码重置流程",
              "网络信号不稳定", "摄像头镜头清洁"]
QUERIES = ["battery charge", "warranty repair screen", "电池续航", "保修期 屏幕", "firmware update reset password",
           "router", "camera lens", "refund receipt order", "Battery battery life"]
DIM = 64


def corpus(n: int = 60, seed: int = 7) -> list[Chunk]:
    """Deterministic chunks of varied length, English and Chinese, over five documents."""
    rng = random.Random(seed)
    chunks = []
    for i in range(n):
        if i % 4 == 3:
            text = "，".join(rng.sample(ZH_PHRASES, rng.randint(1, 4))) + "。"
        else:
            text = " ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(3, 40))) + "."
        chunks.append(Chunk(id=f"c{i}", kb="kb", doc_id=f"d{i % 5}", source=f"docs/{i % 5}.txt", text=text, start=0,
                            end=len(text), mtime=1000.0 + i, tags={"n": str(i % 2)}))
    return chunks


def mean_len(chunks: list[Chunk]) -> float:
    return sum(len(chunk_tokens(c)) for c in chunks) / len(chunks)


@pytest.fixture(autouse=True)
def _quiet_local_mode():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qdrant-client local mode warns about payload indexes
        yield


@pytest.fixture
def store():
    s = QdrantClientStore.memory()
    yield s
    s.close()


def build(store: QdrantClientStore, chunks: list[Chunk], name: str = "kb", **kw) -> QdrantSparseIndex:
    embedder = HashEmbedder(DIM)
    store.ensure_collection(name, DIM, CollectionOptions(sparse=True))
    store.upsert(name, chunks, embedder.encode_corpus([c.match_text for c in chunks]))
    index = QdrantSparseIndex(store, name, **kw)
    index.add(chunks)
    return index


def assert_same(local_hits, sparse_hits) -> None:
    """Same chunks, same order, same BM25 scores (float32 storage in Qdrant)."""
    assert [h.chunk_id for h in sparse_hits] == [h.chunk_id for h in local_hits]
    np.testing.assert_allclose([h.score for h in sparse_hits], [h.score for h in local_hits], rtol=1e-5)


@pytest.fixture
def pair(store):
    chunks = corpus()
    local = LocalBM25Index(None)
    local.add(chunks)
    sparse = build(store, chunks, avg_len=mean_len(chunks))
    yield local, sparse, chunks
    local.close()


def test_implements_the_lexical_protocol(pair):
    _, sparse, _ = pair
    assert isinstance(sparse, LexicalIndex)
    for method in ("replace", "drop", "count", "close"):
        assert callable(getattr(sparse, method))


@pytest.mark.parametrize("query", QUERIES)
def test_same_results_with_the_real_average_length(pair, query):
    local, sparse, _ = pair
    local_hits = local.search(query, 10)
    assert local_hits, "the query must match something for the comparison to mean anything"
    assert_same(local_hits, sparse.search(query, 10))


def test_same_results_under_filters(pair):
    local, sparse, _ = pair
    for flt in (Filter(sources=("docs/1.txt", "docs/3.txt")), Filter(tags=("n=1",)),
                Filter(doc_ids=("d2",), mtime_from=1010.0, mtime_to=1050.0)):
        for query in QUERIES[:5]:
            local_hits = local.search(query, 8, flt)
            assert_same(local_hits, sparse.search(query, 8, flt))
            assert all(flt.matches(c.payload()) for c in pair[2] if c.id in {h.chunk_id for h in local_hits})


def test_no_shared_term_means_no_hit(pair):
    _, sparse, _ = pair
    assert sparse.search("zebra giraffe", 5) == []
    assert sparse.search("", 5) == []
    assert sparse.search("battery", 0) == []


def test_ids_count_and_updates_stay_in_parity(pair, store):
    local, sparse, chunks = pair
    assert sparse.ids() == local.ids() == {c.id for c in chunks}
    assert sparse.count() == local.count() == len(chunks)
    # a re-ingested document: its old chunks go, changed ones come (dense side first, as KnowledgeBase.write does)
    gone = [c.id for c in chunks if c.doc_id == "d1"]
    new = [Chunk(id=f"n{i}", kb="kb", doc_id="d1", source="docs/1.txt", text=t, start=0, end=len(t), mtime=2000.0)
           for i, t in enumerate(["battery battery replacement program", "router firmware reset guide"])]
    store.delete("kb", gone)
    store.upsert("kb", new, HashEmbedder(DIM).encode_corpus([c.text for c in new]))
    sparse.replace(gone, new)
    local.replace(gone, new)
    assert sparse.ids() == local.ids()
    assert sparse.count() == local.count() == len(chunks) - len(gone) + len(new)
    for query in ("battery charge", "router firmware"):  # n0 / n1 win on both paths
        assert local.search(query, 1)[0].chunk_id == sparse.search(query, 1)[0].chunk_id
    # deleting what is already gone from the vector store is a no-op, not an error
    sparse.delete(gone + ["never-existed"])
    sparse.delete([new[0].id])
    local.delete([new[0].id])
    assert sparse.ids() == local.ids()


def test_average_length_is_estimated_once_and_shared_through_collection_metadata(store):
    """Without `avg_len`, the first batch's mean length is stored in the collection metadata; other
    instances (other API replicas) use it. A corpus written in one batch therefore ranks exactly
    like LocalBM25Index."""
    chunks = corpus()
    local = LocalBM25Index(None)
    local.add(chunks)
    sparse = build(store, chunks, name="meta")
    assert sparse.average_length() == pytest.approx(mean_len(chunks))
    meta = store.client.get_collection("meta").config.metadata
    assert meta["bm25_avg_len"] == pytest.approx(mean_len(chunks))
    replica = QdrantSparseIndex(store, "meta")
    assert replica.average_length([["x"]] * 3) == pytest.approx(mean_len(chunks))  # read, not re-estimated
    for query in QUERIES:
        assert_same(local.search(query, 10), replica.search(query, 10))
    replica.drop()  # dropping the lexical side forgets the estimate: the next first batch sets it again
    replica.add(chunks[:4])
    assert replica.average_length() == pytest.approx(mean_len(chunks[:4]))


def test_an_estimated_average_length_keeps_the_ranking_close(store):
    """The fixed `avg_len` is the only approximation: at twice the real average, the top hit and
    most of the top 10 stay the same (exact equality needs the real average)."""
    chunks = corpus()
    local = LocalBM25Index(None)
    local.add(chunks)
    sparse = build(store, chunks, name="estimated", avg_len=2 * mean_len(chunks))
    overlaps, top1 = [], 0
    for query in QUERIES:
        a = [h.chunk_id for h in local.search(query, 10)]
        b = [h.chunk_id for h in sparse.search(query, 10)]
        top1 += a[0] == b[0]
        overlaps.append(len(set(a) & set(b)) / len(a))
    assert top1 >= len(QUERIES) - 1
    assert sum(overlaps) / len(overlaps) >= 0.85


def test_rrf_fusion_matches_between_the_two_paths(pair, store):
    local, sparse, _ = pair
    embedder = HashEmbedder(DIM)
    for query in QUERIES:
        dense = store.search("kb", embedder.encode_queries([query])[0], 20)
        fused_local = rrf([RankedList("dense", "original", dense),
                           RankedList("bm25", "original", local.search(query, 20))], k=60, limit=10)
        fused_sparse = rrf([RankedList("dense", "original", dense),
                            RankedList("bm25", "original", sparse.search(query, 20))], k=60, limit=10)
        assert [(f.chunk_id, f.score) for f in fused_sparse] == [(f.chunk_id, f.score) for f in fused_local]


def test_qdrant_server_side_rrf_equals_client_rrf(pair, store):
    """Qdrant scores 1/(k' + position from 0): `server_rrf` passes k' = c + 1 so the scores equal
    rag.fusion.rrf's 1/(c + rank from 1). Ties may be ordered differently, so compare scores."""
    _, sparse, _ = pair
    embedder = HashEmbedder(DIM)
    for query in QUERIES:
        vector = embedder.encode_queries([query])[0]
        client = rrf([RankedList("dense", "original", store.search("kb", vector, 20)),
                      RankedList("bm25", "original", sparse.search(query, 20))], k=60)
        server = server_rrf(sparse, vector, query, limit=len(client), per_list=20, k=60)
        assert {f.chunk_id: round(f.score, 6) for f in server} == {f.chunk_id: round(f.score, 6) for f in client}
        assert [round(f.score, 6) for f in server] == [round(f.score, 6) for f in client]


def test_drop_removes_the_lexical_side_only(pair, store):
    _, sparse, chunks = pair
    sparse.drop()
    assert sparse.count() == 0 and sparse.ids() == set()
    assert sparse.search("battery", 5) == []
    assert store.count("kb") == len(chunks)  # dense vectors and payloads stay
    sparse.add(chunks[:3])  # and the lexical side can be rebuilt
    assert sparse.ids() == {c.id for c in chunks[:3]}
    store.drop_collection("kb")
    sparse.drop()  # the collection is gone: nothing to do
    assert sparse.count() == 0


def test_add_needs_the_dense_point_first(store):
    chunks = corpus(4)
    sparse = build(store, chunks[:2])
    with pytest.raises(StoreError, match="dense vector must be written"):
        sparse.add(chunks[2:])


def test_collection_without_sparse_vectors_is_refused(store):
    store.ensure_collection("plain", DIM)
    sparse = QdrantSparseIndex(store, "plain")
    assert sparse.ids() == set() and sparse.count() == 0
    with pytest.raises(StoreError, match="rag reindex"):
        sparse.add(corpus(1))


def test_needs_a_qdrant_client_store(tmp_path):
    from rag.adapters.edge_store import EdgeStore
    from rag.protocols import SparseVectorStore

    with pytest.raises(ConfigError, match="RAG_LEXICAL_BACKEND=local"):
        QdrantSparseIndex(object(), "kb")
    edge = EdgeStore(tmp_path / "edge")
    assert not isinstance(edge, SparseVectorStore)  # no qdrant-client API to write sparse vectors through
    with pytest.raises(ConfigError, match="got EdgeStore"):
        QdrantSparseIndex(edge, "kb")
    edge.close()
    store = QdrantClientStore.memory()
    assert isinstance(store, SparseVectorStore)
    with pytest.raises(ConfigError, match="avg_len"):
        QdrantSparseIndex(store, "kb", avg_len=0)
    store.close()
