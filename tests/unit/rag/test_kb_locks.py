"""One writer per knowledge base (`rag.locks.WriteLocks`, taken through `KnowledgeBases.writing`):
Busy for another thread or process at once, re-entrant in the holding thread; the knowledge-base
operations take it themselves."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from rag.errors import Busy, NotFound, RagError
from rag.kb import KnowledgeBases
from rag.locks import WriteLocks
from tests.unit.kb_fixtures import KB, build_services


def held_by_another_thread(kbs: KnowledgeBases, kb: str) -> AbstractContextManager[None]:
    """`kb`'s write lock held by a background thread (another job) while the body runs."""
    return _in_another_thread(lambda: kbs.writing(kb, wait=True))


@contextmanager
def _in_another_thread(take: Callable[[], AbstractContextManager[None]]) -> Iterator[None]:
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with take():
            taken.set()
            release.wait(60)

    worker = threading.Thread(target=hold, daemon=True)
    worker.start()
    assert taken.wait(30)
    try:
        yield
    finally:
        release.set()
        worker.join(30)


def test_another_thread_or_process_is_busy_the_holder_may_reenter(tmp_path):
    locks = WriteLocks(tmp_path / "locks")
    with _in_another_thread(lambda: locks.hold("kb")):
        with pytest.raises(Busy, match="another job"):
            with locks.hold("kb", wait=False):
                pass
        with locks.hold("other", wait=False):  # one lock per knowledge base
            pass
    with locks.hold("kb", wait=False), WriteLocks(tmp_path / "locks").hold("kb", wait=False):
        pass  # the same thread again, through another WriteLocks over the same folder
    with open(tmp_path / "locks" / "kb.lock", "w") as handle:  # another process's flock
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(Busy, match="another process"):
            with locks.hold("kb", wait=False):
                pass
    with locks.hold("kb", wait=False):  # released everywhere
        pass


def test_remove_reindex_and_drop_take_the_write_lock(tmp_path):
    services = build_services(tmp_path)
    kbs = services.kbs
    with held_by_another_thread(kbs, KB):
        for operation in (lambda: kbs.remove(KB, "security-policy.html"), lambda: kbs.reindex(KB),
                          lambda: kbs.drop(KB)):
            with pytest.raises(Busy):
                operation()
    assert kbs.open(KB).check().ok and kbs.open(KB).count() == 7  # nothing was touched
    doc, removed = kbs.remove(KB, "security-policy.html")
    assert (doc.source, removed) == ("security-policy.html", 2)
    with pytest.raises(RagError, match="no document 'security-policy.html'"):
        kbs.remove(KB, "security-policy.html")
    with pytest.raises(NotFound, match="unknown knowledge base 'typo'"):
        kbs.remove("typo", "a.txt")
    assert not kbs.exists("typo") and not (services.data_dir / "locks" / "typo.lock").exists()
    n, collection = kbs.reindex(KB)
    assert (n, collection) == (5, f"{KB}__v2") and kbs.open(KB).check().ok
    kbs.drop(KB)
    assert not kbs.exists(KB)


def test_iter_chunks_pages_the_stored_payloads(tmp_path):
    kb = build_services(tmp_path).kbs.open(KB)
    pages = list(kb.iter_chunks(batch=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(c.id for p in pages for c in p) == sorted(kb.store.ids(kb.collection))
    assert [c.id for p in kb.iter_chunks(["vpn", "leave", "gone"]) for c in p] == ["leave", "vpn"]
