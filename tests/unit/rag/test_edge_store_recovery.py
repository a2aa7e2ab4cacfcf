"""Qdrant Edge shards that a second opener or damaged files broke (issue 31): the store refuses a
second opener before it touches a file, reopens a shard whose flush fails and retries the write,
rebuilds a shard that does not load or read back from what is readable, and never hides a loss
(`KnowledgeBase.check` lists the chunks that could not be recovered). Real shards on disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from rag.adapters.edge_recovery import DAMAGED_MARK
from rag.adapters.edge_store import EdgeStore
from rag.errors import StoreError
from rag.testing import HashEmbedder
from rag.types import Chunk

NAME = "kb1"
DIM = 32
EMBEDDER = HashEmbedder(dim=DIM)


def chunks(n: int, start: int = 0, version: int = 1) -> list[Chunk]:
    return [Chunk(id=f"chunk-{i:04d}", kb=NAME, doc_id=f"doc-{i // 10}", source=f"file{i // 10}.md",
                  text=f"version {version} of passage {i} about the warranty of the device " * 3, start=i, end=i + 1)
            for i in range(start, start + n)]


def write(store: EdgeStore, items: list[Chunk]) -> None:
    store.upsert(NAME, items, EMBEDDER.encode_corpus([c.text for c in items]))


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    """A closed collection of 60 points; its folder."""
    store = EdgeStore(tmp_path / "edge")
    store.ensure_collection(NAME, DIM)
    write(store, chunks(60))
    store.close()
    return tmp_path / "edge" / NAME


def segment_file(folder: Path, relative: str) -> Path:
    (segment,) = (folder / "segments").iterdir()
    return segment / relative


def test_a_second_opener_is_refused_before_it_touches_the_live_shard(shard):
    """Before: the second `EdgeShard.load` removed the live shard's tracker journals before it found
    the WAL locked, and every later flush of the owner failed ("Tracker journal ... is shorter than
    expected", the journal left at 0 bytes)."""
    owner = EdgeStore(shard.parent)
    write(owner, chunks(5, version=2))
    journals = sorted(shard.rglob("tracker_journal.dat"))
    assert journals
    with pytest.raises(StoreError, match="open in another process"):
        EdgeStore(shard.parent).count(NAME)
    assert sorted(shard.rglob("tracker_journal.dat")) == journals
    write(owner, chunks(5, start=60))
    assert owner.count(NAME) == 65
    owner.close()
    assert EdgeStore(shard.parent).count(NAME) == 65


def test_a_write_whose_flush_fails_reopens_the_shard_and_loses_nothing(shard, caplog):
    """A second opener that bypasses the store (an older process, a script) still breaks the live
    shard's flushes: the next write reopens it (its WAL replays the update the failed flush left)
    and is applied once more."""
    from qdrant_edge import EdgeShard

    owner = EdgeStore(shard.parent)
    write(owner, chunks(5, version=2))
    with pytest.raises(Exception, match="WouldBlock"):
        EdgeShard.load(str(shard))  # takes the journals away, then fails on the WAL lock
    with caplog.at_level(logging.WARNING, logger="rag.adapters"):
        write(owner, chunks(5, start=60))
    assert "reopening it and trying again" in caplog.text
    assert owner.count(NAME) == 65
    owner.delete(NAME, ["chunk-0000"])
    owner.close()
    again = EdgeStore(shard.parent)
    assert again.count(NAME) == 64
    assert again.get_payloads(NAME, ["chunk-0001"])["chunk-0001"]["text"].startswith("version 2")
    again.close()


@pytest.mark.parametrize("damage", ["wal/first-index", "edge_config.json"])
def test_a_shard_that_does_not_load_is_rebuilt_from_its_segments(shard, damage):
    (shard / damage).write_bytes(b"")
    store = EdgeStore(shard.parent)
    assert store.count(NAME) == 60  # everything flushed is in the segments
    write(store, chunks(5, start=60))
    report = store.recover(NAME)  # what the open did, kept for the repair to report
    assert report.action == "rebuilt" and (report.recovered, report.lost, report.lost_segments) == (60, 0, ())
    assert store.recover(NAME).action == "none" and store.count(NAME) == 65
    kept = [p.name for p in shard.parent.iterdir() if DAMAGED_MARK in p.name]
    assert len(kept) == 1 and store.collections() == [NAME]
    store.drop_collection(NAME)  # its damaged copy goes with it
    assert list(shard.parent.iterdir()) == []
    store.close()


@pytest.mark.parametrize("damage", ["vector_storage/deleted/status.dat", "segment.json"])
def test_a_segment_that_does_not_load_is_lost_and_said_so(shard, damage, caplog):
    """A truncated status.dat makes qdrant-edge panic (PanicException, not an Exception)."""
    segment_file(shard, damage).write_bytes(b"")
    with caplog.at_level(logging.ERROR, logger="rag.adapters"):
        store = EdgeStore(shard.parent)
        assert store.count(NAME) == 0
    assert "its points are lost" in caplog.text
    write(store, chunks(3))  # the rebuilt collection takes writes
    assert store.count(NAME) == 3
    store.close()


def test_points_that_do_not_read_back_are_dropped_and_counted(shard):
    """Payload page cut short: the shard loads, but the payloads past the cut do not read; the store
    rebuilds it from the points that read back whole, point by point."""
    page = segment_file(shard, "payload_storage/page_0.dat")
    os.truncate(page, 4096)
    store = EdgeStore(shard.parent)
    report = store.recover(NAME)
    assert report.action == "rebuilt" and report.lost > 0 and report.recovered + report.lost == 60
    assert store.count(NAME) == report.recovered == len(store.ids(NAME))
    store.close()


def test_zero_byte_payload_page_is_rebuilt_when_opened_and_the_loss_shows_in_check(tmp_path):
    """Every payload is gone: the collection is rebuilt empty when opened, and the check lists every
    chunk of the catalog as missing in the vector store (the repair then removes those documents
    for re-ingestion) instead of failing or hiding it."""
    from rag.factory import Services
    from tests.unit.kb_fixtures import KB, build_services, make_chunks

    services = build_services(tmp_path, backend="edge", dim=64)
    kb = services.kbs.open(KB)
    assert kb.check().ok
    folder = services.data_dir / "vectors-edge" / kb.collection
    services.close()
    segment_file(folder, "payload_storage/page_0.dat").write_bytes(b"")
    again = Services(services.settings, embedder=HashEmbedder(dim=64))
    try:
        report = again.kbs.open(KB).check()
        assert sorted(report.missing_in_vectors) == sorted(c.id for c in make_chunks())
        assert not report.ok and report.vectors == 0
        assert again.store.recover(kb.collection).action == "rebuilt"
    finally:
        again.close()


def test_a_write_that_fails_for_good_is_a_store_error(shard):
    import shutil

    store = EdgeStore(shard.parent)
    assert store.count(NAME) == 60
    shutil.rmtree(shard)  # the collection's files are gone under the open shard
    with pytest.raises(StoreError, match="could not"):
        write(store, chunks(2, start=60))
    store.close()


def test_recover_of_a_sound_collection_does_nothing(shard):
    store = EdgeStore(shard.parent)
    report = store.recover(NAME)
    assert report.action == "none" and report.recovered == 60 and report.lost == 0
    assert "nothing to recover" in report.message
    assert np.isfinite(store.count(NAME))
    store.close()


def test_repair_reports_the_rebuild_and_removes_the_documents_it_lost(tmp_path):
    """`rag check --repair` runs the store's recovery first: the rebuild is reported, the documents
    whose vectors it lost are removed (to be ingested again) and the check after it is clean."""
    from rag.factory import Services
    from rag.repair import repair
    from tests.unit.kb_fixtures import KB, build_services, make_chunks

    services = build_services(tmp_path, backend="edge", dim=64)
    kb = services.kbs.open(KB)
    folder = services.data_dir / "vectors-edge" / kb.collection
    services.close()
    segment_file(folder, "payload_storage/page_0.dat").write_bytes(b"")
    again = Services(services.settings, embedder=HashEmbedder(dim=64))
    try:
        done = repair(again.kbs, KB)
        assert done.recovery is not None and done.recovery.action == "rebuilt"
        assert sorted(done.removed_missing) == sorted({c.source for c in make_chunks()})
        assert done.after.ok and again.catalog.list_docs(KB) == []
    finally:
        again.close()


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_drop_killed_while_deleting_leaves_no_half_collection(shard, monkeypatch):
    """Found by tests/fault/test_kill9_kb.py: `rag reindex` killed inside the drop of its old
    collection left that folder without its `edge_config.json` but with its segments and WAL: no
    collection (not listed, so no orphan that check or repair removes), yet creating one of that
    name (the next reindex's `<kb>__v<n>`, a new knowledge base of a dropped name) failed with
    "path already contains segment data". Now the folder is renamed away first; what a killed
    deletion leaves is hidden trash that the next drop, create or recovery removes."""
    import shutil

    from rag.adapters import edge_store

    store = EdgeStore(shard.parent)
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, ignore_errors=False):
        (Path(path) / "edge_config.json").unlink()  # the first file gone, then the kill
        raise _Killed(str(path))

    monkeypatch.setattr(edge_store.shutil, "rmtree", killed_rmtree)
    with pytest.raises(_Killed):
        store.drop_collection(NAME)
    monkeypatch.setattr(edge_store.shutil, "rmtree", real_rmtree)
    store = EdgeStore(shard.parent)  # the next process
    assert store.collections() == [] and not store.collection_exists(NAME)
    store.ensure_collection(NAME, DIM)
    write(store, chunks(5))
    assert store.count(NAME) == 5
    store.close()
    assert sorted(p.name for p in shard.parent.iterdir()) == [NAME]
