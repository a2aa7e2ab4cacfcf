"""Write-behind (ingest/writer.py and its use in ingest/runner.py): jobs in order in one thread
while the caller goes on, a bounded queue, the first error stopping the writer and raised in the
caller at its place; and the ingest loop writing a batch while the next one embeds with the same
chunks, ids, catalog and report as inline, failing as inline on a write error, repaired next run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ingest.runner import WRITE_BEHIND
from ingest.service import build_ingestor
from ingest.writer import OrderedWriter
from rag.errors import StoreError
from rag.factory import build_services
from rag.kb import KnowledgeBase
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.fixtures_files import write_mixed_folder


def test_jobs_run_in_order_in_a_thread_while_the_caller_goes_on():
    writer: OrderedWriter[str] = OrderedWriter(depth=1)
    release = threading.Event()
    threads = []

    def job(name: str):
        def run() -> str:
            threads.append(threading.current_thread().name)
            if name == "a":
                assert release.wait(5.0)
            return name
        return run

    writer.submit(job("a"))
    writer.put("skipped")
    assert writer.ready() == []  # "a" is still running: "skipped" waits for it, in its place
    release.set()  # the caller went on while "a" ran
    writer.submit(job("b"))
    assert writer.finish() == ["a", "skipped", "b"]
    assert threads == ["ingest-writer", "ingest-writer"]


def test_submit_blocks_while_depth_jobs_wait():
    writer: OrderedWriter[int] = OrderedWriter(depth=1)
    release = threading.Event()
    writer.submit(lambda: release.wait(5.0) and 1)
    time.sleep(0.05)  # the thread took job 1: the queue is empty
    writer.submit(lambda: 2)  # waits in the queue
    blocked = threading.Event()

    def third() -> None:
        writer.submit(lambda: 3)
        blocked.set()

    caller = threading.Thread(target=third)
    caller.start()
    assert not blocked.wait(0.3)  # one job running, one waiting: the third submit waits
    release.set()
    caller.join(5.0)
    assert blocked.is_set()
    assert writer.finish() == [1, 2, 3]


def test_the_first_error_stops_the_writer_and_is_raised_at_its_place():
    writer: OrderedWriter[int] = OrderedWriter(depth=2)
    ran = []
    gate = threading.Event()

    def ok(n: int):
        def run() -> int:
            gate.wait(5.0)
            ran.append(n)
            return n
        return run

    def broken() -> int:
        raise StoreError("disk full")

    writer.submit(ok(1))
    writer.submit(broken)
    writer.submit(ok(3))
    gate.set()
    deadline = time.monotonic() + 5.0
    got: list[int] = []
    with pytest.raises(StoreError, match="disk full"):
        while time.monotonic() < deadline:
            got += writer.ready()  # 1 first, then the error
            time.sleep(0.01)
    assert got == [1]
    with pytest.raises(StoreError):
        writer.submit(ok(4))
    writer.close()  # does not hang: the job behind the error was dropped
    assert ran == [1]
    with pytest.raises(StoreError):
        writer.finish()


def test_close_after_the_callers_error_writes_what_was_submitted():
    writer: OrderedWriter[int] = OrderedWriter(depth=1)
    ran = []
    writer.submit(lambda: (time.sleep(0.1), ran.append(1))[1])
    writer.submit(lambda: ran.append(2))
    writer.close()  # the caller's own error path: nothing submitted is lost, the thread is joined
    assert ran == [1, 2]


def test_depth_zero_runs_each_job_at_once_and_raises_there():
    writer: OrderedWriter[str] = OrderedWriter(depth=0)
    writer.submit(lambda: threading.current_thread().name)
    assert writer.ready() == [threading.current_thread().name]
    with pytest.raises(StoreError):
        writer.submit(lambda: (_ for _ in ()).throw(StoreError("at once")))


# the ingest loop ------------------------------------------------------------------------------

def _services(data: Path, embedder=None, backend: str = "edge"):
    return build_services(Settings(_env_file=None, data_dir=data, vector_backend=backend, chunk_size=200,
                                   chunk_overlap=20, embed_batch_size=4),
                          embedder=embedder or HashEmbedder(dim=64))


def _state(services, kb: str = "kb1") -> tuple:
    knowledge = services.kbs.open(kb)
    docs = [(d.source, d.state, d.content_hash, tuple(d.chunk_ids), tuple(d.pending_ids))
            for d in services.catalog.list_docs(kb)]
    return docs, knowledge.store.ids(knowledge.collection), knowledge.lexical.ids()


@pytest.mark.parametrize("batch_chunks", [1, 10_000], ids=["file-per-batch", "one-batch"])
@pytest.mark.parametrize("backend", ["edge", "local"])
def test_writes_overlap_the_embedding_with_the_same_result_as_inline(tmp_path, monkeypatch, backend, batch_chunks):
    """The first document's write waits until an embedding call starts after it began: with the
    writer thread that happens (the next batch, or the rest of the same batch, embeds meanwhile);
    inline it cannot, so there it does not wait."""
    docs = write_mixed_folder(tmp_path / "docs")
    writing = threading.Event()  # the first write began
    embedding = threading.Event()  # an embedding call started after that
    overlapped = []

    class Embedder(HashEmbedder):
        def encode_corpus(self, texts):
            if writing.is_set():
                embedding.set()
            return super().encode_corpus(texts)

    original = KnowledgeBase.write

    def write(self, chunks, vectors, delete_ids=()):
        if not writing.is_set():
            writing.set()
            overlapped.append(embedding.wait(5.0))
        return original(self, chunks, vectors, delete_ids)

    monkeypatch.setattr(KnowledgeBase, "write", write)
    results = {}
    for depth in (0, WRITE_BEHIND):
        overlapped.clear()
        writing.clear()
        embedding.clear()
        if depth == 0:
            embedding.set()  # inline nothing embeds while a write runs: do not wait for it
        services = _services(tmp_path / f"data{depth}", Embedder(dim=64), backend)
        ingestor = build_ingestor(services, "kb1")
        ingestor.batch_chunks = batch_chunks
        ingestor.write_behind = depth
        report = ingestor.ingest_folder(docs)
        if depth:
            assert overlapped == [True], "the first document must be written while later chunks embed"
        assert services.kbs.open("kb1").check().ok
        again = build_ingestor(services, "kb1")
        again.write_behind = depth
        rerun = again.ingest_folder(docs)
        assert rerun.chunks_added == 0 and rerun.count("unchanged") == 6  # incremental: nothing new
        results[depth] = ([(f.source, f.status, f.reason, f.chunks_added) for f in report.files],
                          _state(services), report.write_seconds > 0)
        services.close()
    assert results[0] == results[WRITE_BEHIND]
    if batch_chunks == 1:  # the report keeps the files' order
        assert [s for s, *_ in results[0][0]] == ["doc0.txt", "doc1.txt", "doc2.txt", "doc2b.pdf", "doc3.txt",
                                                  "doc3b.txt", "doc4.txt", "doc5.txt"]


@pytest.mark.parametrize("depth", [0, WRITE_BEHIND])
def test_a_write_error_fails_the_run_and_the_next_run_repairs(tmp_path, monkeypatch, depth):
    docs = write_mixed_folder(tmp_path / "docs")
    services = _services(tmp_path / "data")
    original = KnowledgeBase.write
    calls = []

    def write(self, chunks, vectors, delete_ids=()):
        calls.append(chunks[0].source)
        if len(calls) == 3:
            raise StoreError("vector store unavailable")
        return original(self, chunks, vectors, delete_ids)

    with monkeypatch.context() as patch:
        patch.setattr(KnowledgeBase, "write", write)
        ingestor = build_ingestor(services, "kb1")
        ingestor.batch_chunks = 1
        ingestor.write_behind = depth
        with pytest.raises(StoreError, match="vector store unavailable"):
            ingestor.ingest_folder(docs)
    assert calls == ["doc0.txt", "doc1.txt", "doc2.txt"]  # nothing written after the failed document
    states = {d.source: d.state for d in services.catalog.list_docs("kb1")}
    assert states["doc0.txt"] == states["doc1.txt"] == "indexed"
    assert states["doc2.txt"] == "pending"
    assert set(states) <= {f"doc{i}.txt" for i in range(6)}
    assert all(states[s] == "pending" for s in states if s not in ("doc0.txt", "doc1.txt"))
    report = build_ingestor(services, "kb1").ingest_folder(docs)  # the next run, overlapped (the default)
    assert report.count("indexed") == 4 and report.count("unchanged") == 2
    assert services.kbs.open("kb1").check().ok
    assert len(services.catalog.list_docs("kb1", state="indexed")) == 6


def test_the_setting_turns_the_overlap_off(tmp_path, monkeypatch):
    assert build_ingestor(_services(tmp_path / "a"), "kb1").write_behind == WRITE_BEHIND > 0
    monkeypatch.setenv("RAG_INGEST_OVERLAP_WRITES", "false")
    settings = Settings(_env_file=None, data_dir=tmp_path / "b")
    assert settings.ingest_overlap_writes is False
    assert build_ingestor(build_services(settings, embedder=HashEmbedder(dim=64)), "kb1").write_behind == 0
