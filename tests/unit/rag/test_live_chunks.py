"""Queries see only live chunks (issue 11 item 5): a crash at any step of writing a document never
shows a half-written document, and a replaced document answers with exactly one version, the old
one until the new one is complete, then the new one. The next run repairs, `check` agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.runner import Ingestor
from ingest.service import build_ingestor
from rag.catalog import Catalog
from rag.factory import build_services
from rag.kb import KnowledgeBase
from rag.settings import Settings
from rag.testing import HashEmbedder


class Crash(BaseException):
    """Stands for kill -9: nothing catches it, no cleanup code of the ingestor runs."""


STEPS = ["pending", "embedded", "written", "swapped", "deleted"]


def _services(data: Path):
    settings = Settings(_env_file=None, data_dir=data, vector_backend="edge", chunk_size=200, chunk_overlap=20)
    return build_services(settings, embedder=HashEmbedder(dim=64))


def _v1(docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "manual.txt").write_text("Alpha warranty version one covers the device. " * 12, encoding="utf-8")
    (docs / "policy.txt").write_text("Alpha password version one rules for staff. " * 12, encoding="utf-8")


def _v2(docs: Path) -> None:
    (docs / "manual.txt").write_text("Omega warranty release two protects the gadget. " * 12, encoding="utf-8")
    (docs / "fresh.txt").write_text("Brand new warranty appendix about batteries. " * 12, encoding="utf-8")


def _inject(monkeypatch, step: str, nth: int = 1) -> None:
    """Raise Crash right after the `nth` time `step` is done (one document per batch: the nth
    document written; fresh.txt comes first, manual.txt second)."""
    count = [0]

    def after(cls, name, label):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if label == step:
                count[0] += 1
                if count[0] == nth:
                    raise Crash(step)
            return result

        monkeypatch.setattr(cls, name, wrapper)

    after(Catalog, "mark_pending", "pending")
    after(HashEmbedder, "encode_corpus", "embedded")
    after(KnowledgeBase, "write", "written")
    after(Catalog, "mark_indexed", "swapped")
    after(KnowledgeBase, "delete", "deleted")


def visible(services, queries=("warranty", "version", "release", "password", "batteries")) -> dict[str, set[str]]:
    """source -> doc hashes of every chunk dense and BM25 searches return."""
    kb = services.kbs.open("kb")
    seen: dict[str, set[str]] = {}
    ids = set()
    for q in queries:
        vector = kb.embed_queries([q])[0]
        ids.update(h.chunk_id for h in kb.search_dense(vector, 50))
        ids.update(h.chunk_id for h in kb.search_bm25(q, 50))
    for chunk in kb.get_chunks(sorted(ids)).values():
        seen.setdefault(chunk.source, set()).add(chunk.doc_hash)
    return seen


def indexed_hashes(services) -> dict[str, str]:
    return {d.source: d.content_hash for d in services.catalog.list_docs("kb")}


@pytest.mark.parametrize("depth", [0, 4], ids=["inline", "write-behind"])
@pytest.mark.parametrize("nth", [1, 2], ids=["new-doc", "replaced-doc"])
@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_shows_one_version_and_no_half_written_document(tmp_path, monkeypatch, step, nth,
                                                                             depth):
    docs, data = tmp_path / "docs", tmp_path / "data"
    _v1(docs)
    services = _services(data)
    build_ingestor(services, "kb").ingest_folder(docs)
    v1 = indexed_hashes(services)
    _v2(docs)
    with monkeypatch.context() as patch:
        _inject(patch, step, nth)
        ingestor = build_ingestor(services, "kb")
        ingestor.batch_chunks = 1  # one document per batch: the crash hits the first one written
        ingestor.write_behind = depth  # 4: the writes (and a crash in them) in the writer thread
        with pytest.raises(Crash):
            ingestor.ingest_folder(docs)
    services.close()

    services = _services(data)  # a fresh process's view, before any repair
    seen = visible(services)
    docs_state = {d.source: d.state for d in services.catalog.list_docs("kb")}
    assert all(len(hashes) == 1 for hashes in seen.values()), seen  # never both versions
    for source, hashes in seen.items():
        if docs_state[source] == "pending":  # only an old version of a pending document is visible
            assert hashes == {v1[source]}, (source, step)
    if "fresh.txt" in seen:
        assert docs_state["fresh.txt"] == "indexed"
    assert seen["policy.txt"] == {v1["policy.txt"]}

    report = build_ingestor(services, "kb").ingest_folder(docs)  # the repair run
    kb = services.kbs.open("kb")
    assert kb.check().ok, (step, kb.check(), report.as_dict())
    final = indexed_hashes(services)
    assert visible(services) == {source: {h} for source, h in final.items()}
    old_ids = {c.id for c in kb.get_chunks(sorted(kb.store.ids(kb.collection))).values()
               if c.doc_hash == v1["manual.txt"]}
    assert not old_ids  # nothing of the old version survives
    services.close()


def test_old_chunks_a_swap_left_behind_are_invisible_reported_and_removed(tmp_path, monkeypatch):
    docs, data = tmp_path / "docs", tmp_path / "data"
    _v1(docs)
    services = _services(data)
    build_ingestor(services, "kb").ingest_folder(docs)
    (docs / "manual.txt").write_text("Omega warranty release two protects the gadget. " * 12, encoding="utf-8")
    with monkeypatch.context() as patch:
        _inject(patch, "swapped")
        with pytest.raises(Crash):
            build_ingestor(services, "kb").ingest_folder(docs)
    kb = services.kbs.open("kb")
    report = kb.check()
    assert report.extra_in_vectors and report.extra_in_lexical and not report.ok  # `rag check` reports them
    assert services.catalog.docs_with_garbage("kb")
    assert all(len(h) == 1 for h in visible(services).values())
    build_ingestor(services, "kb").ingest_folder(docs)
    assert kb.check().ok and not services.catalog.docs_with_garbage("kb")


def test_searches_overfetch_so_dead_ids_do_not_shrink_top_k(tmp_path):
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    for i in range(30):
        (docs / f"d{i:02}.txt").write_text(f"Shared warranty words document {i}. " * 3, encoding="utf-8")
    services = _services(data)
    build_ingestor(services, "kb").ingest_folder(docs)
    kb = services.kbs.open("kb")
    live = sorted(kb.live_ids())
    # twenty documents pending for the first time: their chunks are in the stores, not live
    ingestor: Ingestor = build_ingestor(services, "kb")
    for doc in services.catalog.list_docs("kb")[:20]:
        services.catalog.remove_doc("kb", doc.doc_id)
    assert len(kb.live_ids()) == len(live) - 20  # the cache followed the catalog's generation
    dense = kb.search_dense(kb.embed_queries(["warranty"])[0], 10)
    bm25 = kb.search_bm25("warranty", 10)
    assert len(dense) == len(bm25) == 10
    assert {h.chunk_id for h in dense + bm25} <= kb.live_ids()
    assert ingestor.kb is kb
