"""What the shared contracts do not cover for the pgvector backend (PgVectorStore, PgSparseIndex), on
the test run's PostgreSQL: odd collection names, the indexes each collection gets, the filters as
SQL, a new store over the same database, BM25 ranking parity with LocalBM25Index and the Qdrant
sparse mode (the way test_lexical_parity does it), connections lent to several threads, and the
factory wiring a knowledge base on it."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from rag.adapters.bm25 import LocalBM25Index
from rag.adapters.pgvector_lexical import PgSparseIndex
from rag.adapters.pgvector_store import SCHEMA, SPARSE_DIM, PgVectorStore, sparse_literal, table_name
from rag.adapters.qdrant_store import QdrantClientStore, term_id
from rag.adapters.sparse_lexical import QdrantSparseIndex
from rag.errors import ConfigError, InvalidRequest, NotFound, StoreError
from rag.protocols import CollectionOptions, LexicalIndex, VectorStore
from rag.testing import HashEmbedder
from rag.types import Chunk, Filter
from tests.contract.test_lexical_parity import QUERIES, assert_same, corpus, mean_len
from tests.contract.test_vector_store_contract import FILTERS, make_chunks, random_unit
from tests.unit.rag.test_db_pool import held_elsewhere

DIM = 64
ODD_NAMES = ["my.kb-1", "my.kb-1__v2", "Select", 'quote"d', "kb;DROP TABLE x", "名字", "a" * 64 + "__v12"]


@pytest.fixture
def store(pg_url):
    s = PgVectorStore(pg_url, hnsw_ef=64)
    yield s
    s.close()


def indexes(url: str, name: str) -> dict[str, str]:
    """The indexes of a collection's table: name -> definition."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                            [SCHEMA, table_name(name)]).fetchall()
    return dict(rows)


def test_odd_collection_names_are_quoted_and_kept_apart(store):
    vectors = random_unit(len(ODD_NAMES), DIM, 1)
    for i, name in enumerate(ODD_NAMES):
        store.ensure_collection(name, DIM)
        store.upsert(name, make_chunks()[i:i + 1], vectors[i:i + 1])
    assert store.collections() == sorted(ODD_NAMES)
    for i, name in enumerate(ODD_NAMES):
        assert store.count(name) == 1
        assert store.search(name, vectors[i], 3)[0].chunk_id == make_chunks()[i].id
    long_name = ODD_NAMES[-1]
    assert len(table_name(long_name).encode()) <= 48 and table_name(long_name) != table_name(long_name[:-1])
    assert table_name("_collections") != "_collections"  # the registry's name is never a collection's table
    store.drop_collection("Select")
    assert not store.collection_exists("Select") and store.collection_exists("my.kb-1")


def test_each_collection_gets_hnsw_gin_and_range_indexes(store, pg_url):
    store.ensure_collection("my.kb-1", DIM, CollectionOptions(hnsw_m=8, hnsw_ef_construct=40))
    found = indexes(pg_url, "my.kb-1")
    hnsw = [d for d in found.values() if "USING hnsw" in d]
    assert len(hnsw) == 1 and "vector_cosine_ops" in hnsw[0] and "m='8'" in hnsw[0]
    assert "ef_construction='40'" in hnsw[0]
    assert any("USING gin (payload jsonb_path_ops)" in d for d in found.values())
    assert any("'mtime'" in d and "double precision" in d for d in found.values())
    assert not any("bm25_terms" in d for d in found.values())
    store.ensure_collection("sparse", DIM, CollectionOptions(sparse=True))
    assert any("USING gin (bm25_terms)" in d for d in indexes(pg_url, "sparse").values())


def test_searches_use_the_hnsw_index_with_ef_search_set(store, pg_url):
    """On a table large enough for the planner to prefer it, a search is an HNSW index scan; the
    ef_search it ran with is the store's (at least the limit)."""
    n = 3000
    store.ensure_collection("big", DIM)
    store.upsert("big", make_chunks([f"t{i}" for i in range(n)]), random_unit(n, DIM, 2))
    with store.transaction("explain", "big") as conn:
        conn.execute("ANALYZE rag_vectors.big")
        store._search_settings(conn, 10, exact=False)
        assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == "64"
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM rag_vectors.big ORDER BY embedding <=> %b::real[]::vector LIMIT 10",
            [random_unit(1, DIM, 3)[0].tolist()]))
    assert "big_hnsw" in plan
    queries = random_unit(20, DIM, 4)
    recall = np.mean([len({h.chunk_id for h in store.search("big", q, 10)}
                          & {h.chunk_id for h in store.search("big", q, 10, exact=True)}) / 10 for q in queries])
    assert recall >= 0.9


@pytest.mark.parametrize("flt", FILTERS, ids=range(len(FILTERS)))
def test_filters_on_an_indexed_table_match_filter_semantics(store, flt):
    """The contract's filters again, on a table big enough for HNSW: the iterative index scan must
    still return the exact filtered top 5 (rows not matching are skipped, not counted)."""
    chunks = make_chunks([f"t{i}" for i in range(1200)])
    vectors = random_unit(len(chunks), DIM, 5)
    store.ensure_collection("f", DIM)
    store.upsert("f", chunks, vectors)
    query = random_unit(1, DIM, 6)[0]
    allowed = [i for i, c in enumerate(chunks) if flt.matches(c.payload())]
    expected = [chunks[i].id for i in sorted(allowed, key=lambda i: -float(vectors[i] @ query))][:5]
    got = store.search("f", query, 5, flt)
    assert len(got) == len(expected)
    assert len(set(h.chunk_id for h in got) & set(expected)) >= len(expected) - 1  # HNSW: approximate


def test_a_scalar_or_array_field_matches_like_qdrant(store):
    chunk = make_chunks()[0]
    store.ensure_collection("kb", DIM)
    store.upsert("kb", [chunk], random_unit(1, DIM, 7))
    query = random_unit(1, DIM, 8)[0]
    assert store.search("kb", query, 3, Filter(tags=(f"lang={chunk.tags['lang']}",)))  # array element
    assert store.search("kb", query, 3, Filter(doc_ids=(chunk.doc_id, "other")))  # scalar, any of
    assert store.search("kb", query, 3, Filter(tags=("lang=xx",))) == []


def test_a_new_store_over_the_same_database_sees_everything(pg_url):
    chunks = make_chunks()
    first = PgVectorStore(pg_url)
    first.ensure_collection("my.kb-1", DIM, CollectionOptions(sparse=True))
    first.upsert("my.kb-1", chunks, random_unit(len(chunks), DIM, 9))
    PgSparseIndex(first, "my.kb-1").add(chunks)
    first.close()
    second = PgVectorStore(pg_url)
    try:
        assert second.collections() == ["my.kb-1"] and second.count("my.kb-1") == len(chunks)
        lexical = PgSparseIndex(second, "my.kb-1")
        assert lexical.ids() == {c.id for c in chunks}
        assert lexical.search("X200 battery", 3)[0].chunk_id == "chunk-002"
        assert Chunk.from_payload(second.get_payloads("my.kb-1", ["chunk-004"])["chunk-004"]) == chunks[4]
        first.ensure_collection("my.kb-1", DIM)  # the closed store reconnects on use
        assert first.count("my.kb-1") == len(chunks)
        first.drop_collection("my.kb-1")
        with pytest.raises(NotFound):  # dropped by another store object: no stale table
            second.count("my.kb-1")
    finally:
        first.close()
        second.close()


def test_a_lost_connection_is_replaced(store, pg_server):
    store.ensure_collection("kb", DIM)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        with store._connections().connection() as conn:  # the idle one, lent and given back
            pid = conn.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(StoreError):  # the call that finds it broken fails ...
        store.count("kb")
    assert store.count("kb") == 0  # ... the next one reconnects


def test_a_search_runs_while_another_thread_writes_and_nested_calls_share_a_connection(pg_url):
    store = PgVectorStore(pg_url, pool_size=2)
    store.ensure_collection("kb", DIM)

    def nested() -> None:
        assert store.count("kb") == 0  # inside the transaction: on its connection

    with held_elsewhere(lambda: store.transaction("hold", "kb"), nested):
        assert store.count("kb") == 0 and store.collections() == ["kb"]  # answered meanwhile
    store.close()
    one = PgVectorStore(pg_url, pool_size=1)  # one connection: nested calls must not ask for a second
    with one.transaction("outer", "kb"):
        assert one.count("kb") == 0
    one.close()


def test_errors_never_show_the_password():
    url = "postgresql://rag:pw-n0t-shown@127.0.0.1:1/db?connect_timeout=1"
    store = PgVectorStore(url, connect_timeout=1)
    with pytest.raises(StoreError) as info:
        store.collections()
    assert "pw-n0t-shown" not in str(info.value) and "pw-n0t-shown" not in repr(store)


def test_sparse_terms_fold_into_pgvectors_dimension():
    literal, terms = sparse_literal([5, 5 + SPARSE_DIM, 7], [1.0, 0.5, 2.0])
    assert terms == [5, 7] and literal == f"{{6:1.5,8:2.0}}/{SPARSE_DIM}"  # the text form counts from 1
    assert max(term_id(w) for w in ("battery", "保修期", "x200")) < 2**31
    with pytest.raises(InvalidRequest, match="16000"):
        sparse_literal(list(range(16_001)), [1.0] * 16_001)


# BM25 as sparsevecs ------------------------------------------------------------------------


def build(store: PgVectorStore, chunks: list[Chunk], name: str = "kb", **kw) -> PgSparseIndex:
    store.ensure_collection(name, DIM, CollectionOptions(sparse=True))
    store.upsert(name, chunks, HashEmbedder(DIM).encode_corpus([c.match_text for c in chunks]))
    index = PgSparseIndex(store, name, **kw)
    index.add(chunks)
    return index


@pytest.fixture
def pair(store):
    chunks = corpus()
    local = LocalBM25Index(None)
    local.add(chunks)
    yield local, build(store, chunks, avg_len=mean_len(chunks)), chunks
    local.close()


def test_implements_the_lexical_protocol(pair, store):
    assert isinstance(pair[1], LexicalIndex) and isinstance(store, VectorStore)


@pytest.mark.parametrize("query", QUERIES)
def test_same_results_as_local_bm25_with_the_real_average_length(pair, query):
    local, sparse, _ = pair
    local_hits = local.search(query, 10)
    assert local_hits
    assert_same(local_hits, sparse.search(query, 10))


def test_same_results_under_filters(pair):
    local, sparse, chunks = pair
    for flt in (Filter(sources=("docs/1.txt", "docs/3.txt")), Filter(tags=("n=1",)),
                Filter(doc_ids=("d2",), mtime_from=1010.0, mtime_to=1050.0)):
        for query in QUERIES[:5]:
            assert_same(local.search(query, 8, flt), sparse.search(query, 8, flt))


def test_same_scores_as_the_qdrant_sparse_mode_after_updates(pair, store):
    """Live document frequencies: after deletes and a replace, PostgreSQL still gives the scores of
    qdrant-client's sparse vectors with the IDF modifier, and holds the ids the local index holds."""
    local, sparse, chunks = pair
    qdrant = QdrantClientStore.memory()
    try:
        qdrant.ensure_collection("kb", DIM, CollectionOptions(sparse=True))
        qdrant.upsert("kb", chunks, HashEmbedder(DIM).encode_corpus([c.match_text for c in chunks]))
        qsparse = QdrantSparseIndex(qdrant, "kb", avg_len=mean_len(chunks))
        qsparse.add(chunks)
        gone = [c.id for c in chunks if c.doc_id == "d1"]
        new = [Chunk(id=f"n{i}", kb="kb", doc_id="d1", source="docs/1.txt", text=t, start=0, end=len(t))
               for i, t in enumerate(["battery battery replacement program", "router firmware reset guide"])]
        for s, index in ((store, sparse), (qdrant, qsparse)):
            s.delete("kb", gone)
            s.upsert("kb", new, HashEmbedder(DIM).encode_corpus([c.text for c in new]))
            index.replace(gone, new)
        local.replace(gone, new)
        assert sparse.ids() == qsparse.ids() == local.ids()
        for query in QUERIES:  # (LocalBM25Index now uses the new mean length, both sparse ones the fixed one)
            assert_same(qsparse.search(query, 10), sparse.search(query, 10))
    finally:
        qdrant.close()


def test_average_length_is_estimated_once_and_shared(store):
    chunks = corpus()
    local = LocalBM25Index(None)
    local.add(chunks)
    first = build(store, chunks, name="meta")
    assert first.average_length() == pytest.approx(mean_len(chunks))
    assert store.metadata("meta")["bm25_avg_len"] == pytest.approx(mean_len(chunks))
    replica = PgSparseIndex(store, "meta")
    assert replica.average_length([["x"]] * 3) == pytest.approx(mean_len(chunks))  # read, not re-estimated
    for query in QUERIES:
        assert_same(local.search(query, 10), replica.search(query, 10))
    replica.drop()
    assert "bm25_avg_len" not in store.metadata("meta")
    replica.add(chunks[:4])
    assert replica.average_length() == pytest.approx(mean_len(chunks[:4]))
    local.close()


def test_replace_and_add_are_atomic(pair, store):
    _, sparse, chunks = pair
    before = sparse.ids()
    ghost = Chunk(id="ghost", kb="kb", doc_id="dx", source="x", text="no dense vector", start=0, end=1)
    with pytest.raises(StoreError, match="dense vector must be written"):
        sparse.replace([chunks[0].id], [chunks[1], ghost])
    assert sparse.ids() == before  # the delete was rolled back with the failed add


def test_a_collection_without_bm25_is_refused(store):
    store.ensure_collection("plain", DIM)
    index = PgSparseIndex(store, "plain")
    assert index.ids() == set() and index.count() == 0
    with pytest.raises(StoreError, match="rag reindex"):
        index.add(corpus(1))
    with pytest.raises(ConfigError, match="RAG_LEXICAL_BACKEND=local"):
        PgSparseIndex(QdrantClientStore.memory(), "kb")  # type: ignore[arg-type]


def test_the_factory_runs_a_knowledge_base_on_pgvector(pg_url, tmp_path):
    """RAG_VECTOR_BACKEND=pgvector end to end: dense vectors, payloads and BM25 in PostgreSQL."""
    from rag.factory import Services
    from rag.settings import Settings
    from tests.unit.kb_fixtures import KB, make_chunks as kb_chunks

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend="pgvector", pgvector_url=pg_url)
    settings.data_dir.mkdir(parents=True)
    services = Services(settings, embedder=HashEmbedder(DIM))
    try:
        assert isinstance(services.store, PgVectorStore) and services.store.hnsw_ef == settings.hnsw_ef
        kb = services.kbs.open_or_create(KB)
        assert isinstance(kb.lexical, PgSparseIndex)
        chunks = kb_chunks()
        kb.write_documents(chunks, services.embedder.encode_corpus([c.match_text for c in chunks]))
        assert kb.search_bm25("battery charge", 3)[0].chunk_id == "battery"
        assert kb.search_dense(services.embedder.encode_queries([chunks[4].text])[0], 1)[0].chunk_id == "vpn"
        assert kb.check().ok
        assert services.lexical_names() == []
    finally:
        services.close()
