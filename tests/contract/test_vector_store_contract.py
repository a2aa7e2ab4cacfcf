"""One contract, run against every VectorStore: EdgeStore (qdrant-edge), QdrantClientStore in
memory and on disk (qdrant-client local mode), and PgVectorStore on the test run's PostgreSQL
(`pg_url`: a fresh database per test)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rag.adapters.edge_store import EdgeStore
from rag.adapters.pgvector_store import PgVectorStore
from rag.adapters.qdrant_store import QdrantClientStore, sparse_document, sparse_query, term_id
from rag.errors import EmbeddingMismatch, InvalidRequest, NotFound
from rag.protocols import CollectionOptions, VectorStore
from rag.testing import HashEmbedder
from rag.text import tokenize
from rag.types import Chunk, Filter

KB = "kb1"
DIM = 64
TEXTS = [
    "The warranty period of the Acme X200 is two years from purchase.",
    "Returns are accepted within thirty days with the original receipt.",
    "The X200 battery lasts twelve hours on a single charge.",
    "Customer support is open Monday to Friday, nine to five.",
    "Firmware updates are installed automatically over wifi.",
    "The charger uses a USB-C connector rated at sixty five watts.",
    "Shipping to Europe takes five to seven business days.",
    "The screen is a thirteen inch OLED panel with touch input.",
    "保修期是自购买之日起两年。",
    "退货需要在三十天内提供原始收据。",
    "Cleaning the device with alcohol wipes is safe for the screen.",
    "The X200 weighs one point two kilograms including the battery.",
]

@dataclass
class Place:
    """Where a test's stores live: a folder, and (asked for only by the pgvector store, so other
    kinds start no PostgreSQL) the test's database."""

    path: Path
    request: pytest.FixtureRequest

    @property
    def pg_url(self) -> str:
        return self.request.getfixturevalue("pg_url")


FACTORIES: dict[str, Callable[[Place], VectorStore]] = {
    "edge": lambda p: EdgeStore(p.path / "edge"),
    "qdrant_memory": lambda p: QdrantClientStore.memory(),
    "qdrant_local": lambda p: QdrantClientStore.local(str(p.path / "qlocal")),
    "pgvector": lambda p: PgVectorStore(p.pg_url, hnsw_ef=64),
}
PERSISTENT = {"edge", "qdrant_local", "pgvector"}


def make_chunks(texts: list[str] = TEXTS) -> list[Chunk]:
    return [
        Chunk(id=f"chunk-{i:03d}", kb=KB, doc_id=f"doc-{i % 4}", source=f"docs/file{i % 4}.md", text=t,
              start=i * 100, end=i * 100 + len(t), title=f"File {i % 4}", section_path=("Manual", f"Part {i % 3}"),
              page=(i % 5) or None, kind="qa" if i == 3 else "text",
              embed_text="When is support open?" if i == 3 else None,
              doc_hash=f"h{i % 4}", mtime=1_700_000_000.0 + i * 1000,
              tags={"lang": "zh" if i in (8, 9) else "en", "team": "a" if i % 2 else "b"})
        for i, t in enumerate(texts)
    ]


@pytest.fixture(params=sorted(FACTORIES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def place(tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return Place(tmp_path, request)


@pytest.fixture
def store(kind: str, place: Place):
    s = FACTORIES[kind](place)
    yield s
    s.close()


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder(dim=DIM)


@pytest.fixture
def filled(store, embedder):
    chunks = make_chunks()
    store.ensure_collection(KB, DIM)
    store.upsert(KB, chunks, embedder.encode_corpus([c.match_text for c in chunks]))
    return store, chunks


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_implements_protocol(store):
    assert isinstance(store, VectorStore)


def test_create_exists_drop(store):
    assert not store.collection_exists(KB)
    store.ensure_collection(KB, DIM)
    assert store.collection_exists(KB)
    store.ensure_collection(KB, DIM)  # idempotent
    assert store.count(KB) == 0
    store.drop_collection(KB)
    assert not store.collection_exists(KB)
    store.drop_collection(KB)  # dropping a missing collection is a no-op


def test_collections_lists_what_exists(store):
    assert store.collections() == []
    for name in ("kb2", KB, f"{KB}__v2"):
        store.ensure_collection(name, DIM)
    assert store.collections() == [KB, f"{KB}__v2", "kb2"]
    store.drop_collection(f"{KB}__v2")
    assert store.collections() == [KB, "kb2"]


def test_collection_options(store, embedder):
    store.ensure_collection(KB, DIM, CollectionOptions(hnsw_m=8, hnsw_ef_construct=64, on_disk_vectors=True,
                                                       on_disk_payload=True, scalar_quantization=True,
                                                       shard_number=1, replication_factor=1))
    chunks = make_chunks()
    store.upsert(KB, chunks, embedder.encode_corpus([c.match_text for c in chunks]))
    assert store.search(KB, embedder.encode_queries([chunks[4].text])[0], 1)[0].chunk_id == chunks[4].id
    with pytest.raises(TypeError):  # options are typed: a misspelt one fails before any store call
        CollectionOptions(no_such_option=1)  # type: ignore[call-arg]


def test_dim_mismatch(store, embedder):
    store.ensure_collection(KB, DIM)
    with pytest.raises(EmbeddingMismatch):
        store.ensure_collection(KB, DIM * 2)
    chunks = make_chunks()[:2]
    with pytest.raises(EmbeddingMismatch):
        store.upsert(KB, chunks, np.ones((2, DIM + 1), dtype=np.float32))
    with pytest.raises(EmbeddingMismatch):
        store.search(KB, np.ones(DIM + 1, dtype=np.float32), 3)
    with pytest.raises(InvalidRequest):
        store.upsert(KB, chunks, np.ones((3, DIM), dtype=np.float32))


def test_missing_collection_raises_not_found(store):
    with pytest.raises(NotFound):
        store.search("nope", np.ones(DIM, dtype=np.float32), 3)
    with pytest.raises(NotFound):
        store.count("nope")


def test_empty_collection_search(store):
    store.ensure_collection(KB, DIM)
    assert store.search(KB, random_unit(1, DIM, 0)[0], 5) == []
    assert store.ids(KB) == set()


def test_upsert_and_search_order(filled, embedder):
    store, chunks = filled
    assert store.count(KB) == len(chunks)
    for i in (0, 5, 8):
        hits = store.search(KB, embedder.encode_queries([chunks[i].match_text])[0], 5)
        assert hits[0].chunk_id == chunks[i].id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.search(KB, embedder.encode_queries(["battery"])[0], 0) == []


def test_scores_are_cosine(filled):
    store, chunks = filled
    vectors = HashEmbedder(dim=DIM).encode_corpus([c.match_text for c in chunks])
    query = random_unit(1, DIM, 3)[0]
    hits = store.search(KB, query, len(chunks), exact=True)
    by_id = {c.id: float(vectors[i] @ query) for i, c in enumerate(chunks)}
    for h in hits:
        assert h.score == pytest.approx(by_id[h.chunk_id], abs=1e-4)


def test_idempotent_upsert(filled, embedder):
    store, chunks = filled
    store.upsert(KB, chunks, embedder.encode_corpus([c.match_text for c in chunks]))
    assert store.count(KB) == len(chunks)
    assert store.ids(KB) == {c.id for c in chunks}


def test_delete_and_ids(filled, embedder):
    store, chunks = filled
    gone = [chunks[0].id, chunks[5].id, "never-existed"]
    store.delete(KB, gone)
    assert store.count(KB) == len(chunks) - 2
    assert store.ids(KB) == {c.id for c in chunks} - set(gone)
    hits = store.search(KB, embedder.encode_queries([chunks[0].match_text])[0], len(chunks))
    assert chunks[0].id not in {h.chunk_id for h in hits}
    store.delete(KB, [])


def test_payload_round_trip(filled):
    store, chunks = filled
    payloads = store.get_payloads(KB, [chunks[3].id, chunks[8].id, "missing"])
    assert set(payloads) == {chunks[3].id, chunks[8].id}
    assert Chunk.from_payload(payloads[chunks[3].id]) == chunks[3]
    assert Chunk.from_payload(payloads[chunks[8].id]) == chunks[8]


FILTERS = [
    Filter(sources=("docs/file1.md",)),
    Filter(sources=("docs/file1.md", "docs/file2.md")),
    Filter(doc_ids=("doc-3",)),
    Filter(tags=("lang=zh",)),
    Filter(tags=("lang=en", "team=a")),
    Filter(mtime_from=1_700_003_000.0),
    Filter(mtime_to=1_700_004_000.0),
    Filter(mtime_from=1_700_002_000.0, mtime_to=1_700_006_000.0),
    Filter(sources=("docs/file0.md", "docs/file2.md"), tags=("team=b",), mtime_to=1_700_008_000.0),
    Filter(sources=("no/such/file",)),
]


@pytest.mark.parametrize("flt", FILTERS, ids=range(len(FILTERS)))
def test_filters_match_filter_semantics(store, flt):
    chunks = make_chunks()
    vectors = random_unit(len(chunks), DIM, 1)
    store.ensure_collection(KB, DIM)
    store.upsert(KB, chunks, vectors)
    query = random_unit(1, DIM, 2)[0]
    allowed = [i for i, c in enumerate(chunks) if flt.matches(c.payload())]
    expected = [chunks[i].id for i in sorted(allowed, key=lambda i: -float(vectors[i] @ query))][:5]
    assert [h.chunk_id for h in store.search(KB, query, 5, flt)] == expected


def test_reopen_from_disk(kind, place):
    """A new store object over the same folder or database sees what the first one wrote."""
    if kind not in PERSISTENT:
        pytest.skip("in-memory store")
    chunks = make_chunks()
    vectors = random_unit(len(chunks), DIM, 11)
    store = FACTORIES[kind](place)
    store.ensure_collection(KB, DIM)
    store.upsert(KB, chunks, vectors)
    store.delete(KB, [chunks[1].id])
    query = vectors[2]
    before = store.search(KB, query, 5)
    store.close()
    reopened = FACTORIES[kind](place)
    try:
        assert reopened.collection_exists(KB)
        assert reopened.count(KB) == len(chunks) - 1
        assert reopened.ids(KB) == {c.id for c in chunks} - {chunks[1].id}
        assert [h.chunk_id for h in reopened.search(KB, query, 5)] == [h.chunk_id for h in before]
        with pytest.raises(EmbeddingMismatch):
            reopened.ensure_collection(KB, DIM + 1)
    finally:
        reopened.close()


def test_parity_across_stores(place):
    texts = [f"passage {i} about topic {i % 7} and item {i * 13 % 11}" for i in range(300)]
    chunks = make_chunks(texts)
    vectors = random_unit(len(chunks), DIM, 5)
    queries = random_unit(10, DIM, 6)
    results = {}
    for kind, factory in FACTORIES.items():
        store = factory(place)
        try:
            store.ensure_collection(KB, DIM)
            store.upsert(KB, chunks, vectors)
            results[kind] = [[h.chunk_id for h in store.search(KB, q, 10, exact=True)] for q in queries]
            results[kind + "+filter"] = [[h.chunk_id for h in store.search(KB, q, 10, FILTERS[4], exact=True)]
                                         for q in queries]
        finally:
            store.close()
    expected = [[chunks[i].id for i in np.argsort(-(vectors @ q), kind="stable")[:10]] for q in queries]
    assert all(results[kind] == expected for kind in FACTORIES)
    assert all(results[kind + "+filter"] == results["edge+filter"] for kind in FACTORIES)


def test_sparse_bm25_vectors(store):
    chunks = make_chunks()
    tokens = [tokenize(c.text) for c in chunks]
    store.ensure_collection(KB, DIM, CollectionOptions(sparse=True))
    store.upsert(KB, chunks, random_unit(len(chunks), DIM, 7), sparse_vectors=[sparse_document(t) for t in tokens])
    terms = tokenize("X200 battery")  # ["x200", "batteri"]: stemmed like the documents
    indices, values = sparse_query(terms)
    hits = store.search_sparse(KB, indices, values, 5)
    holders = {c.id for c, t in zip(chunks, tokens) if set(terms) & set(t)}
    assert {h.chunk_id for h in hits} == holders
    # score = sum over query terms of idf * document weight (Qdrant's IDF modifier)
    n, df = len(chunks), Counter(t for toks in tokens for t in set(toks))
    top = chunks.index(next(c for c in chunks if c.id == hits[0].chunk_id))
    weight = dict(zip(*sparse_document(tokens[top])))
    expected = sum(math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) * weight.get(term_id(t), 0.0)
                   for t in terms)
    assert hits[0].score == pytest.approx(expected, rel=1e-3)
    zh = store.search_sparse(KB, *sparse_query(tokenize("保修期")), 3)
    assert zh[0].chunk_id == chunks[8].id
    filtered = store.search_sparse(KB, indices, values, 5, Filter(doc_ids=("doc-3",)))
    assert {h.chunk_id for h in filtered} == {c.id for c in chunks if c.id in holders and c.doc_id == "doc-3"}


# EdgeStore only ---------------------------------------------------------------------------


def test_edge_returns_stored_vectors(tmp_path, embedder):
    chunks = make_chunks()
    vectors = embedder.encode_corpus([c.match_text for c in chunks])
    store = EdgeStore(tmp_path / "edge")
    try:
        store.ensure_collection(KB, DIM)
        store.upsert(KB, chunks, vectors)
        got = store.get_vectors(KB, [chunks[2].id, chunks[0].id, "missing"])
    finally:
        store.close()
    assert set(got) == {chunks[0].id, chunks[2].id}
    np.testing.assert_allclose(got[chunks[2].id], vectors[2], atol=1e-6)
    np.testing.assert_allclose(got[chunks[0].id], vectors[0], atol=1e-6)


def test_edge_hnsw_build_and_recall(tmp_path):
    n, dim = 3000, 32
    centers = random_unit(30, dim, 8)
    rng = np.random.default_rng(9)
    vectors = centers[rng.integers(0, 30, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = make_chunks([f"t{i}" for i in range(n)])
    store = EdgeStore(tmp_path / "edge", hnsw_ef=64, indexing_threshold_kb=10)
    try:
        store.ensure_collection(KB, dim)
        store.upsert(KB, chunks, vectors)
        assert store.index_info(KB)["indexed_vectors"] == 0
        assert store.optimize(KB, min_unindexed=n + 1) is False  # too few unindexed points: skipped
        assert store.optimize(KB, min_unindexed=n) is True
        assert store.index_info(KB)["indexed_vectors"] == n
        assert store.optimize(KB, min_unindexed=1) is False
        queries = random_unit(50, dim, 10)
        recall = np.mean([len({h.chunk_id for h in store.search(KB, q, 10)}
                              & {h.chunk_id for h in store.search(KB, q, 10, exact=True)}) / 10 for q in queries])
        assert recall >= 0.95
    finally:
        store.close()
    reopened = EdgeStore(tmp_path / "edge")
    assert reopened.index_info(KB)["indexed_vectors"] == n
    reopened.close()


def test_edge_survives_kill_after_upsert(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from rag.adapters.edge_store import EdgeStore
        from rag.types import Chunk
        store = EdgeStore({str(tmp_path / "edge")!r})
        store.ensure_collection("kb1", 16)
        chunks = [Chunk(id=f"c{{i}}", kb="kb1", doc_id="d", source="s", text="t", start=0, end=1) for i in range(12)]
        store.upsert("kb1", chunks, np.random.default_rng(0).standard_normal((12, 16)).astype(np.float32))
        store.delete("kb1", ["c0"])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -9
    store = EdgeStore(tmp_path / "edge")
    try:
        assert store.count(KB) == 11
        assert "c0" not in store.ids(KB)
    finally:
        store.close()


def test_edge_rejects_unsafe_collection_names(tmp_path):
    store = EdgeStore(tmp_path / "edge")
    with pytest.raises(InvalidRequest):
        store.ensure_collection("../escape", DIM)
    store.close()


def test_recover_of_a_sound_collection_changes_nothing(filled):
    """`recover` (what `rag check --repair` calls first): nothing to do on a sound collection; an
    unknown one is NotFound."""
    store, chunks = filled
    report = store.recover(KB)
    assert report.collection == KB and report.action == "none" and report.lost == 0
    assert store.ids(KB) == {c.id for c in chunks}
    store.upsert(KB, chunks[:1], np.ones((1, DIM), dtype=np.float32))  # still takes writes
    with pytest.raises(NotFound):
        store.recover("missing")
