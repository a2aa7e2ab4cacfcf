"""Crash-safe knowledge-base lifecycle (issue 31 items 3 and 7): a drop killed between any two of
its steps is finished by the next command that meets it; collections and BM25 indexes left by
killed reindexes (orphans) are listed by check and removed by drop, the next reindex and repair,
never while a reindex is writing them. Real stores on disk (Qdrant Edge, local BM25)."""

from __future__ import annotations

import pytest

from rag.adapters.bm25 import LocalBM25Index, index_names
from rag.adapters.edge_store import EdgeStore
from rag.catalog import Catalog
from rag.errors import NotFound
from rag.factory import Services
from rag.kb import KnowledgeBases
from rag.repair import repair
from rag.testing import HashEmbedder
from tests.unit.kb_fixtures import KB, build_services, make_chunks
from tests.unit.rag.test_kb_locks import held_by_another_thread

OTHER = "other"


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the step runs, no handler sees it."""


@pytest.fixture
def services(tmp_path):
    services = build_services(tmp_path, backend="edge")
    chunks = make_chunks(OTHER)[:2]
    vectors = services.embedder.encode_corpus([c.text for c in chunks])
    services.kbs.open_or_create(OTHER).write_documents(chunks, vectors)
    yield services
    services.close()


def restart(services: Services) -> Services:
    """The next command: a new process over the same data folder."""
    services.close()
    return Services(services.settings, embedder=HashEmbedder(dim=64), reranker=None)


def on_disk(services: Services) -> tuple[list[str], list[str]]:
    return services.store.collections(), index_names(services.data_dir / "bm25")


def kill_at(monkeypatch, cls: type, method: str, after: bool) -> None:
    original = getattr(cls, method)

    def step(self, *args, **kwargs):
        if after:
            original(self, *args, **kwargs)
        raise Killed(f"{cls.__name__}.{method}")

    monkeypatch.setattr(cls, method, step)


DROP_STEPS = {  # killed right after each step of a drop
    "marked": (LocalBM25Index, "drop", False),
    "bm25 deleted": (EdgeStore, "drop_collection", False),
    "vectors deleted": (KnowledgeBases, "drop_orphans", False),
    "orphans deleted": (Catalog, "delete_kb", False),
}


# every step with one next command, every next command after one step
KILLS = sorted({(step, "open") for step in DROP_STEPS}
               | {("vectors deleted", command) for command in ("list", "open_or_create", "drop", "repair")})


@pytest.mark.parametrize(("step", "next_command"), KILLS)
def test_a_drop_killed_after_any_step_is_finished_by_the_next_command(services, monkeypatch, step, next_command):
    with monkeypatch.context() as patch:
        kill_at(patch, *DROP_STEPS[step])
        with pytest.raises(Killed):
            services.kbs.drop(KB)
    services = restart(services)
    kbs = services.kbs
    assert not kbs.exists(KB) and [r.name for r in services.catalog.list_kbs()] == [OTHER]  # hidden at once
    assert kbs.check(OTHER).half_dropped == [KB] and not kbs.check(OTHER).ok
    if next_command == "open":
        with pytest.raises(NotFound, match="an interrupted drop of it was finished now"):
            kbs.open(KB)
    elif next_command == "list":
        assert [r.name for r in kbs.list()] == [OTHER]
    elif next_command == "open_or_create":
        assert kbs.open_or_create(KB).count() == 0 and services.catalog.list_docs(KB) == []
        kbs.drop(KB)
    elif next_command == "drop":
        assert kbs.drop(KB) is True  # it says that it finished an interrupted drop
    else:
        assert repair(kbs, OTHER).finished_drops == [KB]
    assert services.catalog.get_dropping(KB) is None and services.catalog.list_docs(KB) == []
    assert on_disk(services) == ([OTHER], [OTHER])
    assert kbs.check(OTHER).ok
    services.close()


def test_killed_reindexes_leave_orphans_that_check_lists_and_the_next_reindex_removes(services, monkeypatch):
    for _ in range(2):  # killed before the switch: the new collection is nobody's (the second run removes the first's)
        with monkeypatch.context() as patch:
            kill_at(patch, KnowledgeBases, "_switch_collection", False)
            with pytest.raises(Killed):
                services.kbs.reindex(KB)
    services = restart(services)
    report = services.kbs.check(OTHER)
    assert (report.orphan_collections, report.orphan_lexical, report.ok) == ([f"{KB}__v2"], [f"{KB}__v2"], False)
    assert services.kbs.check(KB).orphan_collections == [f"{KB}__v2"]
    with monkeypatch.context() as patch:  # killed right after the switch: the old indexes are nobody's
        kill_at(patch, Catalog, "update_kb", True)
        with pytest.raises(Killed):
            services.kbs.reindex(KB)
    services = restart(services)
    kbs = services.kbs
    assert services.catalog.get_kb(KB).collection == f"{KB}__v2"
    report = kbs.check(KB)
    assert (report.orphan_collections, report.orphan_lexical, report.ok) == ([KB], [KB], False)
    assert kbs.reindex(KB) == (7, f"{KB}__v3")
    assert on_disk(services) == ([f"{KB}__v3", OTHER], [f"{KB}__v3", OTHER])
    assert kbs.check(KB).ok and kbs.check(OTHER).ok
    services.close()


def test_drop_and_repair_remove_orphans_but_not_a_reindex_in_progress(services, monkeypatch):
    with monkeypatch.context() as patch:
        kill_at(patch, KnowledgeBases, "_switch_collection", False)
        with pytest.raises(Killed):
            services.kbs.reindex(KB)
        with pytest.raises(Killed):
            services.kbs.reindex(OTHER)
    kbs = services.kbs
    assert kbs.orphans().collections == [f"{KB}__v2", f"{OTHER}__v2"]
    with held_by_another_thread(services.kbs, OTHER):  # a reindex of `other` writing its new collection
        found = kbs.orphans()
        assert (found.collections, found.in_progress) == ([f"{KB}__v2"], [f"{OTHER}__v2"])
        assert kbs.check(KB).orphan_collections == [f"{KB}__v2"]
        assert kbs.drop_orphans() == [f"{KB}__v2"]
    assert on_disk(services)[0] == [KB, OTHER, f"{OTHER}__v2"]
    kbs.drop(OTHER)  # its orphans go with it
    assert on_disk(services) == ([KB], [KB])
    with monkeypatch.context() as patch:
        kill_at(patch, KnowledgeBases, "_switch_collection", False)
        with pytest.raises(Killed):
            kbs.reindex(KB)
    done = repair(kbs, KB)
    assert done.orphans_dropped == [f"{KB}__v2"] and done.after.ok and on_disk(services) == ([KB], [KB])


def test_on_a_shared_qdrant_server_only_reindexed_collections_are_orphans(tmp_path):
    services = build_services(tmp_path)  # in-memory qdrant-client store
    services.store.ensure_collection("someone-elses", 8)
    services.store.ensure_collection(f"{KB}__v7", 64)
    own = services.kbs.orphans().collections
    shared = KnowledgeBases(services.catalog, lambda: services.store, services.lexical_factory,
                            lambda: services.embedder, locks=services.kbs.locks, own_store=False).orphans().collections
    assert own == [f"{KB}__v7", "someone-elses"] and shared == [f"{KB}__v7"]


def test_closing_services_closes_the_bm25_indexes_it_opened(tmp_path):
    """Found by tests/fault/test_kill9_kb.py: a closed `Services` kept each opened BM25 index's
    SQLite connection until the garbage collector found it (a reference cycle), in whatever
    process that happened: a forked child that finalised an inherited connection to the same
    file lost its own BM25 commits. The indexes a reindex wrote and switched away from are closed
    too."""
    import sqlite3

    services = build_services(tmp_path, backend="edge")
    chunks = make_chunks(KB)[:2]
    services.kbs.open_or_create(KB).write_documents(chunks, services.embedder.encode_corpus([c.text for c in chunks]))
    before = services.kbs.open(KB).lexical
    opened = []
    original = LocalBM25Index.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        opened.append(self)

    LocalBM25Index.__init__ = recording
    try:
        services.kbs.reindex(KB)
        after = services.kbs.open(KB).lexical
    finally:
        LocalBM25Index.__init__ = original
    services.close()
    for index in (before, after, *opened):
        with pytest.raises(sqlite3.ProgrammingError):
            index._db.execute("SELECT 1")
