"""One contract for every LexicalIndex: LocalBM25Index in memory and on disk, QdrantSparseIndex
(BM25 as Qdrant sparse vectors) over qdrant-client's in-memory and on-disk local mode, and
PgSparseIndex (BM25 as pgvector sparsevecs) on the test run's PostgreSQL. Qdrant Edge is not a
`SparseVectorStore` (it has no qdrant-client API): `QdrantSparseIndex` refuses it, and edge
knowledge bases use `LocalBM25Index`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.adapters.bm25 import LocalBM25Index
from rag.adapters.pgvector_lexical import PgSparseIndex
from rag.adapters.pgvector_store import PgVectorStore
from rag.adapters.qdrant_store import QdrantClientStore
from rag.adapters.sparse_lexical import QdrantSparseIndex
from rag.protocols import CollectionOptions, LexicalIndex
from rag.testing import HashEmbedder
from rag.text import tokenize
from rag.types import Chunk, Filter

TEXTS = [
    "The warranty period of the Acme X200 is two years from purchase.",
    "Returns are accepted within thirty days with the original receipt.",
    "The X200 BATTERY lasts twelve hours on a single charge.",
    "Customer support is open Monday to Friday.",
    "Battery replacement is free during the warranty period.",
    "保修期是自购买之日起两年。",
    "退货需要在三十天内提供原始收据。",
    "电池续航时间为十二小时。",
]

_STORES: dict[tuple[str, Path], QdrantClientStore | PgVectorStore] = {}  # one store per test: a path store opens once
_EMBEDDER = HashEmbedder(16)


@dataclass
class Place:
    """Where a test's indexes live: a folder, and (asked for only by the pgvector kind, so other
    kinds start no PostgreSQL) the test's database."""

    path: Path
    request: pytest.FixtureRequest

    @property
    def pg_url(self) -> str:
        return self.request.getfixturevalue("pg_url")


class DenseFirst:
    """A sparse index driven the way `KnowledgeBase.write` drives it: the dense points are upserted
    before their sparse vectors are set."""

    def add(self, chunks):
        if chunks:
            self.store.upsert(self.collection, list(chunks), _EMBEDDER.encode_corpus([c.match_text for c in chunks]))
        super().add(chunks)


class DenseFirstSparseIndex(DenseFirst, QdrantSparseIndex):
    pass


class DenseFirstPgSparseIndex(DenseFirst, PgSparseIndex):
    pass


def _sparse(kind: str, place: Place) -> QdrantSparseIndex | PgSparseIndex:
    key = (kind, place.path)
    if key not in _STORES:
        _STORES[key] = {"memory": QdrantClientStore.memory,
                        "local": lambda: QdrantClientStore.local(str(place.path / "q")),
                        "pg": lambda: PgVectorStore(place.pg_url)}[kind]()
    store = _STORES[key]
    store.ensure_collection("kb", _EMBEDDER.dim, CollectionOptions(sparse=True))
    return DenseFirstPgSparseIndex(store, "kb") if kind == "pg" else DenseFirstSparseIndex(store, "kb")


FACTORIES: dict[str, Callable[[Place], LexicalIndex]] = {
    "memory": lambda p: LocalBM25Index(None),
    "disk": lambda p: LocalBM25Index(p.path / "bm25"),
    "sparse_memory": lambda p: _sparse("memory", p),
    "sparse_local": lambda p: _sparse("local", p),
    "pgvector": lambda p: _sparse("pg", p),
}
SPARSE = ("sparse_memory", "sparse_local", "pgvector")


@pytest.fixture(autouse=True)
def _close_stores():
    yield
    while _STORES:
        _STORES.popitem()[1].close()


def make_chunks(texts: list[str] = TEXTS, prefix: str = "c") -> list[Chunk]:
    return [Chunk(id=f"{prefix}{i}", kb="kb", doc_id=f"doc-{i % 3}", source=f"src/{i % 3}.txt", text=t, start=0,
                  end=len(t), mtime=1000.0 + i, tags={"lang": "zh" if i >= 5 else "en", "n": str(i % 2)})
            for i, t in enumerate(texts)]


@pytest.fixture(params=sorted(FACTORIES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def place(tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return Place(tmp_path, request)


@pytest.fixture
def index(kind: str, place: Place):
    ix = FACTORIES[kind](place)
    ix.add(make_chunks())
    yield ix
    ix.close()


def ids_of(hits) -> list[str]:
    return [h.chunk_id for h in hits]


def test_implements_protocol(index):
    assert isinstance(index, LexicalIndex)
    assert index.stale is False


def test_rebuild_replaces_everything(index):
    fresh = make_chunks(["rebuilt text about zebras", "another rebuilt battery line"], prefix="r")
    index.rebuild(fresh)
    assert index.ids() == {"r0", "r1"}
    assert ids_of(index.search("battery", 5)) == ["r1"]
    assert index.search("warranty", 5) == []
    assert index.stale is False


def test_search_ranks_matching_chunks(index):
    hits = index.search("battery hours", 5)
    assert ids_of(hits)[0] == "c2"
    assert set(ids_of(hits)) == {"c2", "c4"}  # only chunks sharing a token
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)
    assert index.search("zebra", 5) == []
    assert index.search("battery", 0) == []
    assert index.search("", 5) == []


def test_lowercase_matching(index):
    assert ids_of(index.search("x200 Battery", 1)) == ["c2"]
    assert ids_of(index.search("WARRANTY", 5)) == ids_of(index.search("warranty", 5))


def test_chinese_query_matches_chinese_chunk(index):
    assert ids_of(index.search("保修期多久？", 3))[0] == "c5"
    assert ids_of(index.search("电池能用多长时间", 3))[0] == "c7"


def test_ids_count_and_idempotent_add(index):
    assert index.ids() == {f"c{i}" for i in range(len(TEXTS))}
    index.add(make_chunks())
    assert index.count() == len(TEXTS)
    changed = Chunk(id="c0", kb="kb", doc_id="doc-0", source="src/0.txt", text="now about zebras", start=0, end=16)
    index.add([changed])
    assert index.count() == len(TEXTS)
    assert ids_of(index.search("zebras", 5)) == ["c0"]
    assert "c0" not in ids_of(index.search("warranty", 5))


def test_delete(index):
    index.delete(["c2", "missing"])
    assert "c2" not in index.ids()
    assert ids_of(index.search("battery", 5)) == ["c4"]
    index.delete([])
    assert index.count() == len(TEXTS) - 1


FILTERS = [
    Filter(sources=("src/1.txt",)),
    Filter(doc_ids=("doc-0", "doc-2")),
    Filter(tags=("lang=en",)),
    Filter(tags=("lang=en", "n=0")),
    Filter(mtime_from=1002.0),
    Filter(mtime_to=1003.0),
    Filter(sources=("src/1.txt", "src/2.txt"), tags=("n=1",), mtime_from=1001.0, mtime_to=1006.0),
    Filter(sources=("nowhere",)),
]


@pytest.mark.parametrize("flt", FILTERS, ids=range(len(FILTERS)))
def test_filters_match_filter_semantics(kind, place, flt):
    texts = [f"common word plus item{i % 5}" for i in range(40)]
    chunks = make_chunks(texts)
    ix = FACTORIES[kind](place)
    try:
        ix.add(chunks)
        expected = {c.id for c in chunks if flt.matches(c.payload())}
        assert set(ids_of(ix.search("common", 100, flt))) == expected
        top = ids_of(ix.search("common item3", 3, flt))
        assert set(top) <= expected and len(top) == min(3, len(expected))
    finally:
        ix.close()


def test_replace_is_atomic(kind, index):
    new = make_chunks(["fresh text about gadgets"], prefix="n")
    index.replace(["c0", "c4"], new)
    assert index.ids() == ({f"c{i}" for i in range(len(TEXTS))} - {"c0", "c4"}) | {"n0"}
    assert ids_of(index.search("gadgets", 3)) == ["n0"]
    if kind in SPARSE:  # no transactions in Qdrant: replace is idempotent instead (atomic in PostgreSQL)
        index.replace(["c0", "c4"], new)
        assert index.ids() == ({f"c{i}" for i in range(len(TEXTS))} - {"c0", "c4"}) | {"n0"}
        return
    with pytest.raises(RuntimeError):
        with index.transaction():
            index.delete(["c1"])
            index.add(make_chunks(["ghost"], prefix="g"))
            raise RuntimeError("fail mid-way")
    assert "c1" in index.ids() and "g0" not in index.ids()
    assert index.search("ghost", 3) == []


def test_reopen_from_disk(kind, place):
    if kind != "disk":
        pytest.skip("in-memory index")
    ix = FACTORIES[kind](place)
    ix.add(make_chunks())
    ix.delete(["c1"])
    ix.add_tokens("t1", tokenize("hand tokenised battery note"), {"source": "x", "doc_id": "dx", "tags": ["lang=en"],
                                                                  "mtime": 5.0})
    before = ix.search("battery warranty", 10)
    ix.close()
    reopened = FACTORIES[kind](place)
    try:
        assert reopened.ids() == ({f"c{i}" for i in range(len(TEXTS))} - {"c1"}) | {"t1"}
        assert reopened.search("battery warranty", 10) == before
        assert ids_of(reopened.search("note", 5, Filter(doc_ids=("dx",)))) == ["t1"]
    finally:
        reopened.close()


def test_drop(kind, place):
    ix = FACTORIES[kind](place)
    ix.add(make_chunks())
    ix.drop()
    if kind == "disk":
        assert not (place.path / "bm25" / "bm25.sqlite").exists()
    fresh = FACTORIES[kind](place)
    try:
        assert fresh.count() == 0 and fresh.search("battery", 3) == []
    finally:
        fresh.close()
