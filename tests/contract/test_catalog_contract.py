"""The catalog contract: the catalog, the version families' tables, API keys, conversations and job
records behave the same on the SQLite files of a single host and on a PostgreSQL database that API
replicas share (`RAG_CATALOG_URL`); both run here, PostgreSQL for real (tests/conftest.py)."""

from __future__ import annotations

import threading

import pytest

from api.auth import ApiKeyStore
from api.conversations import ConversationStore
from rag.catalog import Catalog, DocRecord
from rag.db import Database, SchemaTooNew
from rag.errors import InvalidRequest, NotFound


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a store's database is: a SQLite path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "catalog.sqlite"
    return request.getfixturevalue("pg_url")


def doc(kb: str, doc_id: str, source: str, content_hash: str = "h1", tags: dict | None = None) -> DocRecord:
    return DocRecord(kb, doc_id, source, "/docs", content_hash, 1700000000.5, 1234, "Title " + source, "md",
                     tags or {}, "recursive", "pending", [], [], 0.0)


def test_knowledge_bases_are_created_listed_updated_and_dropped(target):
    catalog = Catalog(target)
    rec = catalog.create_kb("handbook", "bge-small", 384, "handbook", meta={"lang": "zh"})
    assert catalog.get_kb("handbook") == rec and catalog.require_kb("handbook").meta == {"lang": "zh"}
    with pytest.raises(InvalidRequest):
        catalog.create_kb("handbook", "bge-small", 384, "handbook")
    with pytest.raises(InvalidRequest):  # a collection holds one knowledge base
        catalog.create_kb("other", "bge-small", 384, "handbook")
    catalog.create_kb("a.kb-2", "bge-small", 384, "a.kb-2")
    assert [k.name for k in catalog.list_kbs()] == ["a.kb-2", "handbook"]
    catalog.update_kb("handbook", embed_model="bge-m3", dim=1024, collection="handbook__v2")
    assert (catalog.get_kb("handbook").dim, catalog.collection_owner("handbook__v2")) == (1024, "handbook")
    assert catalog.collections() == {"a.kb-2", "handbook__v2"}
    before = catalog.generation("handbook")
    catalog.mark_dropping("handbook")
    assert catalog.get_kb("handbook") is None and [k.name for k in catalog.list_kbs()] == ["a.kb-2"]
    assert [k.name for k in catalog.dropping_kbs()] == ["handbook"] and catalog.generation("handbook") > before
    assert catalog.get_dropping("handbook").meta == {"lang": "zh"}  # the mark is not part of the meta
    catalog.delete_kb("handbook")
    assert catalog.get_dropping("handbook") is None
    with pytest.raises(NotFound):
        catalog.require_kb("handbook")
    catalog.close()


def test_documents_go_pending_indexed_and_away_with_the_live_set(target):
    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    a = doc("kb", "d1", "a.md", tags={"team": "hr", "名": "值"})
    catalog.mark_pending(a, ["c1", "c2"])
    assert catalog.live_chunk_ids("kb")[1] == frozenset()  # nothing live until the swap
    catalog.mark_indexed(a, ["c1", "c2"])
    gen, live = catalog.live_chunk_ids("kb")
    assert live == {"c1", "c2"} and gen == catalog.generation("kb")
    got = catalog.get_doc("kb", "d1")
    assert (got.state, got.tags, got.mtime, got.size, got.content_hash) == ("indexed", a.tags, a.mtime, 1234, "h1")
    assert catalog.find_doc_by_source("kb", "a.md").doc_id == "d1"
    assert catalog.kb_stats("kb") == {"documents": 1, "chunks": 2, "bytes": 1234}
    # a new version: the old ids stay live while pending, then become garbage until cleared
    b = doc("kb", "d1", "a.md", content_hash="h2")
    catalog.mark_pending(b, ["c3"])
    pending = catalog.get_doc("kb", "d1")
    assert (pending.state, pending.chunk_ids, pending.pending_ids, pending.content_hash) == (
        "pending", ["c1", "c2"], ["c3"], "h1")
    assert catalog.live_chunk_ids("kb")[1] == {"c1", "c2"}
    catalog.mark_indexed(b, ["c3"], garbage=["c1", "c2"])
    assert catalog.live_chunk_ids("kb")[1] == {"c3"}
    assert [d.doc_id for d in catalog.docs_with_garbage("kb")] == ["d1"]
    catalog.clear_garbage("kb", "d1")
    assert catalog.docs_with_garbage("kb") == []
    # a rolled-back attempt keeps the version it replaced
    catalog.mark_pending(doc("kb", "d1", "a.md", content_hash="h3"), ["c4"])
    catalog.roll_back_pending("kb", "d1")
    assert (catalog.get_doc("kb", "d1").state, catalog.get_doc("kb", "d1").content_hash) == ("indexed", "h2")
    catalog.mark_many_indexed([(doc("kb", f"e{i}", f"e{i}.md"), [f"e{i}c"], []) for i in range(3)])
    assert [d.source for d in catalog.list_docs("kb", state="indexed")] == ["a.md", "e0.md", "e1.md", "e2.md"]
    assert catalog.all_chunk_ids("kb") == {"c3", "e0c", "e1c", "e2c"}
    catalog.mark_deleting("kb", "e0")
    assert "e0c" not in catalog.live_chunk_ids("kb")[1]
    catalog.remove_doc("kb", "e0")
    assert catalog.get_doc("kb", "e0") is None
    catalog.close()


def test_two_connections_see_each_others_writes(target):
    """What replicas rely on: a second connection (another replica) reads what the first wrote,
    and the generation tells it that its cached live set is stale."""
    one, two = Catalog(target), Catalog(target)
    one.create_kb("kb", "m", 8, "kb")
    seen = two.generation("kb")
    one.mark_indexed(doc("kb", "d1", "a.md"), ["c1"])
    assert two.generation("kb") > seen and two.live_chunk_ids("kb")[1] == {"c1"}
    one.close()
    two.close()


def test_concurrent_writers_lose_no_update(target):
    """Threads with connections of their own bump the generation and add documents at once."""
    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    start = catalog.generation("kb")

    def writer(n: int) -> None:
        mine = Catalog(target)
        for i in range(10):
            mine.mark_indexed(doc("kb", f"w{n}-{i}", f"w{n}-{i}.md"), [f"w{n}-{i}"])
        mine.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert catalog.generation("kb") == start + 30 and len(catalog.live_chunk_ids("kb")[1]) == 30
    catalog.close()


def test_api_keys_and_conversations(target):
    keys = ApiKeyStore(target)
    made = keys.create("reader", read=["handbook"])
    assert keys.lookup(made.secret).id == made.id and keys.count() == 1 and keys.list()[0].read == ["handbook"]
    keys.revoke(made.id)
    with pytest.raises(NotFound):
        keys.revoke(made.id)
    assert keys.lookup(made.secret) is None
    conversations = ConversationStore(target)
    conversations.add_turn("conv_1", "key_a", "handbook", "What is 年假?", "Five days [1].", {"sources": [1]})
    conversations.add_turn("conv_1", "key_a", "handbook", "And sick leave?", "Ten days.")
    got = conversations.get("conv_1", "key_a")
    assert [m.role for m in got.messages] == ["user", "assistant", "user", "assistant"]
    assert got.title == "What is 年假?" and got.messages[1].meta == {"sources": [1]}
    with pytest.raises(NotFound):
        conversations.get("conv_1", "key_b")
    assert [c.id for c in conversations.list("key_a")] == ["conv_1"]
    conversations.delete("conv_1", "key_a")
    assert conversations.list("key_a") == [] and not conversations.exists_for("conv_1", "key_a")
    keys.close()
    conversations.close()


def test_turns_added_at_once_keep_their_order_and_lose_none(target):
    stores = [ConversationStore(target) for _ in range(3)]

    def talk(store: ConversationStore, n: int) -> None:
        for i in range(5):
            store.add_turn("conv_x", "key_a", "kb", f"q{n}-{i}", f"a{n}-{i}")

    threads = [threading.Thread(target=talk, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = stores[0].get("conv_x", "key_a").messages
    assert len(messages) == 30
    assert all(q.role == "user" and a.role == "assistant" and a.content == "a" + q.content[1:]
               for q, a in zip(messages[::2], messages[1::2]))
    for s in stores:
        s.close()


def test_migrations_apply_once_in_order_and_refuse_a_newer_schema(target):
    steps = [("CREATE TABLE IF NOT EXISTS things (id TEXT PRIMARY KEY)",),
             ("ALTER TABLE things ADD COLUMN size BIGINT NOT NULL DEFAULT 0",)]
    db = Database(target)
    assert db.migrate("things", steps[:1]) == 1
    db.execute("INSERT INTO things (id) VALUES (?)", ("a",))
    assert Database(target).migrate("things", steps) == 2  # a new release adds a column
    assert db.one("SELECT size FROM things WHERE id=?", ("a",))["size"] == 0
    assert Database(target).migrate("things", steps) == 2  # nothing to do
    with pytest.raises(SchemaTooNew, match="version 2"):
        Database(target).migrate("things", steps[:1])  # an older release on a newer database
    db.close()


def test_replicas_starting_together_migrate_once(target):
    """Several processes' first connections migrate at the same moment without an error."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Catalog(target).close()
            ApiKeyStore(target).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Database(target).schema_version("catalog") == 1
