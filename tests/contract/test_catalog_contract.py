"""The catalog contract: the catalog, the version families' tables, API keys, conversations and job
records behave the same on the SQLite files of a single host and on a PostgreSQL database that API
replicas share (`RAG_CATALOG_URL`); both run here, PostgreSQL for real (tests/conftest.py)."""

from __future__ import annotations

import threading

import pytest

from api.auth import ApiKeyStore
from api.conversations import ConversationStore
from rag.catalog import MIGRATIONS, Catalog, DocRecord
from rag.db import Database, SchemaTooNew
from rag.doc_query import DocQuery
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
    assert Database(target).schema_version("catalog") == len(MIGRATIONS)


def _indexed(catalog: Catalog, kb: str, n: int) -> None:
    """`n` indexed documents: doc-0000 ... with every third tagged team=hr, every second lang=en."""
    items = []
    for i in range(n):
        tags = {**({"team": "hr"} if i % 3 == 0 else {}), **({"lang": "en"} if i % 2 == 0 else {})}
        items.append((doc(kb, f"d{i:04d}", f"doc-{i:04d}.md", tags=tags), [f"c{i}a", f"c{i}b"], []))
    catalog.mark_many_indexed(items)


def test_documents_are_paged_searched_and_filtered_in_sql(target):
    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    catalog.create_kb("other", "m", 8, "other")
    _indexed(catalog, "kb", 120)
    _indexed(catalog, "other", 5)
    catalog.mark_pending(doc("kb", "p1", "zeta_100%.md"), ["z1"])
    page = catalog.page_docs("kb", DocQuery(limit=50, offset=100))
    assert page.total == 121 and [d.source for d in page.docs][:2] == ["doc-0100.md", "doc-0101.md"]
    assert len(page.docs) == 21 and page.docs[-1].source == "zeta_100%.md" and page.docs[0].chunk_ids == ["c100a", "c100b"]
    assert catalog.page_docs("kb", DocQuery(q="DOC-001", limit=5)).total == 10  # doc-0010 ... doc-0019
    assert [d.source for d in catalog.page_docs("kb", DocQuery(q="title doc-0042")).docs] == ["doc-0042.md"]
    assert [d.doc_id for d in catalog.page_docs("kb", DocQuery(q="_100%")).docs] == ["p1"]  # wildcards literal
    assert catalog.page_docs("kb", DocQuery(q="c_0")).total == 0  # not doc-0...
    assert catalog.page_docs("kb", DocQuery(state="pending")).total == 1
    hr = catalog.page_docs("kb", DocQuery(tags=("team=hr",), limit=10000))
    assert hr.total == 40 and all(d.tags["team"] == "hr" for d in hr.docs)
    assert catalog.page_docs("kb", DocQuery(tags=("team=hr", "lang=en"))).total == 20
    assert catalog.page_docs("kb", DocQuery(tags=("team=hr",), q="doc-000")).total == 4  # 0, 3, 6, 9
    assert catalog.doc_ids_with_tags("kb", ["team=hr", "lang=en"])[:3] == ["d0000", "d0006", "d0012"]
    assert catalog.doc_ids_with_tags("kb", ["team=nobody"]) == []
    with pytest.raises(InvalidRequest) as bad:
        DocQuery(state="gone")
    assert bad.value.field == "state"
    assert DocQuery.parse_tag("team:hr") == DocQuery.parse_tag(" team = hr") == "team=hr"
    with pytest.raises(InvalidRequest):
        DocQuery.parse_tag("team")
    catalog.close()


def test_tags_and_titles_edited_after_upload_drive_tag_filters(target):
    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    _indexed(catalog, "kb", 4)
    gen = catalog.generation("kb")
    edited = catalog.update_doc_meta("kb", "d0001", tags={"team": "hr", "år": "2024"}, title="Handbook")
    assert edited.tags == {"team": "hr", "år": "2024"} and edited.title == "Handbook" and edited.chunk_ids == ["c1a", "c1b"]
    assert catalog.doc_ids_with_tags("kb", ["team=hr"]) == ["d0000", "d0001", "d0003"]
    assert catalog.doc_ids_with_tags("kb", ["år=2024"]) == ["d0001"]
    catalog.update_doc_meta("kb", "d0000", tags={})
    assert catalog.doc_ids_with_tags("kb", ["team=hr"]) == ["d0001", "d0003"]
    assert catalog.tags_of("kb", ["d0000", "d0001", "nope"]) == {"d0000": {}, "d0001": {"team": "hr", "år": "2024"}}
    assert catalog.generation("kb") == gen  # the live set did not move
    with pytest.raises(NotFound):
        catalog.update_doc_meta("kb", "nope", title="x")
    catalog.remove_doc("kb", "d0001")
    assert catalog.doc_ids_with_tags("kb", ["år=2024"]) == []
    catalog.close()


def test_a_catalog_from_before_tag_rows_gets_them_filled(target):
    db = Database(target)
    db.migrate("catalog", MIGRATIONS[:1])
    old = Catalog.__new__(Catalog)
    old.db = db
    old._write_doc = lambda d, **kw: db.upsert("documents", {  # noqa: E731 (the step-1 write, no tag rows)
        "kb": d.kb, "doc_id": d.doc_id, "source": d.source, "origin": "", "content_hash": "h", "mtime": 0.0,
        "size": 1, "title": "", "format": "", "tags": '{"team": "hr"}', "chunker": "", "state": "indexed",
        "chunk_ids": "[]", "pending_ids": "[]", "ingested_at": 0.0}, ("kb", "doc_id"))
    db.execute("INSERT INTO kbs (name, embed_model, dim, collection, created_at, meta) VALUES ('kb','m',8,'kb',0,'{}')")
    old._write_doc(doc("kb", "d1", "a.md"))
    db.close()
    assert Catalog(target).doc_ids_with_tags("kb", ["team=hr"]) == ["d1"]


def test_reads_inside_a_transaction_see_its_writes_and_a_failure_rolls_back(target):
    db = Database(target)
    db.migrate("things", [("CREATE TABLE IF NOT EXISTS things (id TEXT PRIMARY KEY)",)])
    with db.transaction():
        db.execute("INSERT INTO things (id) VALUES (?)", ("a",))
        with db.snapshot():  # joins the transaction: sees its own write
            assert db.one("SELECT id FROM things WHERE id=?", ("a",)) is not None
    with pytest.raises(RuntimeError), db.transaction():
        db.execute("INSERT INTO things (id) VALUES (?)", ("b",))
        raise RuntimeError("a failure halfway")
    assert [r["id"] for r in Database(target).query("SELECT id FROM things ORDER BY id")] == ["a"]
    db.close()


def test_chunk_edits_swap_disable_and_go_with_their_document(target):
    from rag.chunk_edits import ChunkEdit

    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    a = doc("kb", "d1", "a.md")
    catalog.mark_pending(a, ["c1", "c2", "c2#q0", "c3"])
    catalog.mark_indexed(a, ["c1", "c2", "c2#q0", "c3"])
    gen = catalog.generation("kb")
    edit = ChunkEdit("kb", "d1", "k2", "old text", None, "new text", created_at=1.0, updated_at=2.0)
    saved = catalog.save_chunk_edit(edit, "e2", replaces=["c2", "c2#q0"])  # an edited chunk takes c2's place
    assert saved.chunk_ids == ["c1", "e2", "c3"] and saved.pending_ids == ["c2", "c2#q0"] and saved.state == "indexed"
    assert catalog.generation("kb") > gen and catalog.chunk_edit("kb", "d1", "k2") == edit
    catalog.clear_garbage("kb", "d1")
    disabled = catalog.save_chunk_edit(ChunkEdit("kb", "d1", "k1", "one", disabled=True, created_at=3.0), "c1")
    assert disabled.disabled_ids == ["c1"] and catalog.live_chunk_ids("kb")[1] == {"e2", "c3"}
    assert [e.key for e in catalog.chunk_edits("kb", "d1")] == ["k2", "k1"]
    # the next version keeps its own disabled ids (the re-applied edits) and drops the edits asked
    a.disabled_ids = ["e2"]
    catalog.mark_pending(a, ["c1", "e2"])
    assert catalog.get_doc("kb", "d1").disabled_ids == ["c1"]  # pending: the live version unchanged
    catalog.mark_indexed(a, ["c1", "e2"], drop_edits=["k1"])
    assert catalog.live_chunk_ids("kb")[1] == {"c1"} and [e.key for e in catalog.chunk_edits("kb", "d1")] == ["k2"]
    enabled = catalog.save_chunk_edit(ChunkEdit("kb", "d1", "k3", "three", created_at=4.0), "e2")  # nothing left
    assert enabled.disabled_ids == [] and catalog.chunk_edit("kb", "d1", "k3") is None
    catalog.remove_doc("kb", "d1")
    assert catalog.chunk_edits("kb", "d1") == []
    with pytest.raises(NotFound):
        catalog.save_chunk_edit(edit, "e2")


def test_kb_meta_keys_are_set_and_removed_one_at_a_time(target):
    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb", meta={"description": "Handbook"})
    rec = catalog.update_kb_meta("kb", {"settings": {"chunk_size": 300, "tags": {"团队": "人事"}}})
    assert rec.meta == {"description": "Handbook", "settings": {"chunk_size": 300, "tags": {"团队": "人事"}}}
    assert catalog.update_kb_meta("kb", {"settings": None}).meta == {"description": "Handbook"}
    with pytest.raises(InvalidRequest):
        catalog.update_kb_meta("kb", {"dropping": 1.0})
    with pytest.raises(NotFound):
        catalog.update_kb_meta("missing", {"settings": {}})
    catalog.mark_dropping("kb")
    with pytest.raises(NotFound):  # a knowledge base being dropped takes no settings
        catalog.update_kb_meta("kb", {"settings": {}})
    catalog.close()


def test_concurrent_meta_updates_of_different_keys_both_land(target):
    Catalog(target).create_kb("kb", "m", 8, "kb")
    catalogs = [Catalog(target) for _ in range(2)]
    threads = [threading.Thread(target=lambda c=c, i=i: [c.update_kb_meta("kb", {f"k{i}": n}) for n in range(15)])
               for i, c in enumerate(catalogs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert catalogs[0].require_kb("kb").meta == {"k0": 14, "k1": 14}
    for c in catalogs:
        c.close()


def test_documents_ingested_before_a_time_are_counted(target):
    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    for i in range(3):
        d = doc("kb", f"d{i}", f"{i}.md")
        catalog.mark_pending(d, [f"c{i}"])
        catalog.mark_indexed(d, [f"c{i}"])
    after = catalog.get_doc("kb", "d2").ingested_at + 1
    assert catalog.count_docs_ingested_before("kb", after) == 3
    assert catalog.count_docs_ingested_before("kb", 0) == 0 and catalog.count_docs_ingested_before("other", after) == 0
    catalog.close()


def test_usage_counts_per_day_top_cited_and_never_cited(target):
    from rag.usage import UsageLog

    catalog = Catalog(target)
    catalog.create_kb("kb", "m", 8, "kb")
    for i, source in enumerate(["a.md", "b.md", "c.md"]):
        d = doc("kb", f"d{i}", source)
        catalog.mark_pending(d, [f"c{i}"])
        catalog.mark_indexed(d, [f"c{i}"])
    usage = UsageLog(catalog.db)
    day = 86400.0
    now = 1_750_000_000.0  # 2025-06-15 UTC
    usage.record("kb", refused=False, cited=["d0", "d1"], at=now)
    usage.record("kb", refused=False, cited=["d0", "d0"], at=now)
    usage.record("kb", refused=True, cited=[], at=now - day)
    usage.record("kb", refused=False, cited=["d2"], at=now - 10 * day)  # outside a 7-day window
    usage.record("kb", refused=False, cited=["gone"], at=now)  # a document removed since
    usage.record("other", refused=False, cited=["d1"], at=now)
    report = usage.report("kb", 7, now=now)
    assert [d.day for d in report.days][-2:] == ["2025-06-14", "2025-06-15"] and report.since == "2025-06-09"
    assert [(d.questions, d.refusals, d.cited_documents) for d in report.days[-2:]] == [(1, 1, 0), (3, 0, 3)]
    assert [(c.doc_id, c.source, c.answers) for c in report.top_cited] == [("d0", "a.md", 2), ("d1", "b.md", 1),
                                                                            ("gone", None, 1)]
    assert [(c.doc_id, c.source) for c in report.never_cited] == [("d2", "c.md")] and report.never_cited_total == 1
    assert usage.report("kb", 30, now=now).never_cited_total == 0
    assert usage.report("kb", 7, now=now, limit=1, offset=1).never_cited == []  # paged
    usage.forget("kb")
    assert usage.report("kb", 30, now=now).top_cited == [] and usage.report("other", 1, now=now).days[0].questions == 1
    catalog.close()
