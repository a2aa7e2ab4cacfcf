"""The ingest prefetch (ingest/prefetch.py and its use in ingest/runner.py): results in order, a
bounded lead, an error at its item's place, an early close stopping the producer, and the ingest
loop parsing the next files while a batch embeds with the same per-file results as inline."""

from __future__ import annotations

import threading
import time
from contextlib import closing

import pytest

from ingest.prefetch import prefetched
from ingest.service import build_ingestor
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder
from tests.unit.fixtures_files import write_mixed_folder


def test_results_come_in_order_from_a_thread_at_most_depth_ahead():
    started: list[int] = []
    consumed: list[int] = []
    lead: list[int] = []

    def work(i: int) -> tuple[int, str]:
        started.append(i)
        lead.append(len(started) - len(consumed))
        time.sleep(0.002)
        return i, threading.current_thread().name

    out = []
    for i, thread in prefetched(range(30), work, depth=3):
        consumed.append(i)
        out.append((i, thread))
        time.sleep(0.005)  # a slow consumer: the producer fills the queue and waits
    assert [i for i, _ in out] == list(range(30))
    assert {t for _, t in out} == {"ingest-prefetch"}
    # 3 results queued + 1 in the consumer's hands + the one being worked on
    assert max(lead) <= 3 + 2


def test_depth_zero_works_inline():
    assert [t for t in prefetched(range(3), lambda i: threading.current_thread().name, depth=0)] == \
        [threading.current_thread().name] * 3


def test_an_error_is_raised_at_its_items_place():
    def work(i: int) -> int:
        if i == 2:
            raise ValueError("bad item 2")
        return i

    got = []
    with pytest.raises(ValueError, match="bad item 2"):
        for value in prefetched(range(5), work, depth=2):
            got.append(value)
    assert got == [0, 1]


def test_closing_early_stops_the_producer():
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        return i

    with closing(prefetched(range(1000), work, depth=2)) as results:
        assert next(results) == 0
    time.sleep(0.3)
    n = len(started)
    time.sleep(0.3)
    assert len(started) == n and n <= 1 + 2 + 2  # stopped: nothing started after the close


class _WaitingEmbedder(HashEmbedder):
    """Its first encode waits (up to 5 s) until the chunker has split the third file: with the
    prefetch on, that happens while the first batch embeds."""

    def __init__(self, split: threading.Event) -> None:
        super().__init__(dim=64)
        self.split = split
        self.overlapped: bool | None = None

    def encode_corpus(self, texts):
        if self.overlapped is None:
            self.overlapped = self.split.wait(5.0)
        return super().encode_corpus(texts)


@pytest.mark.parametrize("prefetch", [0, 4])
def test_ingest_parses_ahead_while_embedding_with_the_same_results(tmp_path, prefetch):
    docs = write_mixed_folder(tmp_path / "docs")
    split = threading.Event()
    embedder = _WaitingEmbedder(split)
    services = build_services(Settings(data_dir=tmp_path / "data", vector_backend="local", chunk_size=200,
                                       chunk_overlap=20, embed_batch_size=4),
                              embedder=embedder)
    ingestor = build_ingestor(services, "kb1")
    ingestor.batch_chunks = 1  # one file per batch: embedding starts after the first file
    ingestor.prefetch = prefetch
    chunker = ingestor.chunker
    splits: list[str] = []

    class CountingChunker:
        signature = chunker.signature

        def split(self, parsed):
            splits.append(parsed.title)
            if len(splits) >= 3:
                split.set()
            return chunker.split(parsed)

    ingestor.chunker = CountingChunker()
    if prefetch == 0:
        split.set()  # inline, the third file is parsed only after the first batch: do not wait for it
    report = ingestor.ingest_folder(docs)
    assert embedder.overlapped is True
    assert [(f.source, f.status) for f in report.files] == [
        ("doc0.txt", "indexed"), ("doc1.txt", "indexed"), ("doc2.txt", "indexed"), ("doc2b.pdf", "skipped"),
        ("doc3.txt", "indexed"), ("doc3b.txt", "skipped"), ("doc4.txt", "indexed"), ("doc5.txt", "indexed")]
    assert all(f.reason for f in report.skipped)
    assert services.kbs.open("kb1").check().ok


def test_an_unexpected_error_while_parsing_ahead_fails_the_run(tmp_path):
    docs = write_mixed_folder(tmp_path / "docs")
    services = build_services(Settings(data_dir=tmp_path / "data", vector_backend="local", chunk_size=200),
                              embedder=HashEmbedder(dim=64))
    ingestor = build_ingestor(services, "kb1")
    ingestor.batch_chunks = 1
    chunker = ingestor.chunker
    calls = []

    class BrokenChunker:
        signature = chunker.signature

        def split(self, parsed):
            calls.append(parsed.title)
            if len(calls) == 3:
                raise RuntimeError("chunker bug")
            return chunker.split(parsed)

    ingestor.chunker = BrokenChunker()
    with pytest.raises(RuntimeError, match="chunker bug"):
        ingestor.ingest_folder(docs)
    indexed = {d.source for d in services.catalog.list_docs("kb1", state="indexed")}
    assert indexed == {"doc0.txt", "doc1.txt"}  # the files before the error were written, nothing after
