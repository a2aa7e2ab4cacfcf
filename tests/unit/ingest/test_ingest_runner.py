"""Incremental, crash-safe ingestion through the real stores with a deterministic embedder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.service import build_ingestor
from rag.errors import EmbeddingMismatch
from rag.factory import build_services
from rag.settings import Settings
from rag.testing import HashEmbedder

ROOT = Path(__file__).resolve().parents[3]


def _services(data_dir: Path, backend: str = "edge", embedder=None, **settings):
    s = Settings(data_dir=data_dir, vector_backend=backend, **settings)
    return build_services(s, embedder=embedder or HashEmbedder(dim=64))


def _write_docs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("Alpha document about warranty terms. " * 40, encoding="utf-8")
    (folder / "b.md").write_text("# Battery\n\nThe battery lasts two hours. " + "Charging takes four hours. " * 30,
                                 encoding="utf-8")
    (folder / "c.txt").write_text("保修期是自购买之日起两年。" * 30, encoding="utf-8")


@pytest.fixture(params=["edge", "local"])
def backend(request):
    return request.param


def test_reingest_unchanged_folder_embeds_nothing(tmp_path, backend):
    docs = tmp_path / "docs"
    _write_docs(docs)
    embedder = HashEmbedder(dim=64)
    services = _services(tmp_path / "data", backend, embedder, chunk_size=200, chunk_overlap=20)
    first = build_ingestor(services, "kb1").ingest_folder(docs)
    assert first.count("indexed") == 3 and first.chunks_added > 3
    calls = len(embedder.calls)
    second = build_ingestor(services, "kb1").ingest_folder(docs)
    assert second.count("unchanged") == 3 and second.chunks_added == 0
    assert len(embedder.calls) == calls, "an unchanged folder must not be re-embedded"
    assert services.kbs.open("kb1").check().ok


def test_changed_file_replaces_exactly_its_chunks_and_removed_file_is_pruned(tmp_path, backend):
    docs = tmp_path / "docs"
    _write_docs(docs)
    services = _services(tmp_path / "data", backend, chunk_size=200, chunk_overlap=20)
    build_ingestor(services, "kb1").ingest_folder(docs)
    kb = services.kbs.open("kb1")
    before = {d.source: set(d.chunk_ids) for d in services.catalog.list_docs("kb1")}
    (docs / "a.txt").write_text("Completely new text about returns and refunds. " * 10, encoding="utf-8")
    (docs / "c.txt").unlink()
    report = build_ingestor(services, "kb1").ingest_folder(docs)
    statuses = {f.source: f.status for f in report.files}
    assert statuses == {"a.txt": "updated", "b.md": "unchanged", "c.txt": "removed"}
    after = {d.source: set(d.chunk_ids) for d in services.catalog.list_docs("kb1")}
    assert after["b.md"] == before["b.md"]
    assert not (after["a.txt"] & before["a.txt"])
    ids = kb.store.ids(kb.collection)
    assert ids == after["a.txt"] | after["b.md"] == kb.lexical.ids()
    assert kb.check().ok
    hits = kb.search_bm25("refunds", 5)
    assert hits and kb.get_chunks([hits[0].chunk_id])[hits[0].chunk_id].source == "a.txt"


def test_no_prune_keeps_removed_files(tmp_path):
    docs = tmp_path / "docs"
    _write_docs(docs)
    services = _services(tmp_path / "data")
    build_ingestor(services, "kb1").ingest_folder(docs)
    (docs / "c.txt").unlink()
    report = build_ingestor(services, "kb1").ingest_folder(docs, prune=False)
    assert report.count("removed") == 0
    assert len(services.catalog.list_docs("kb1")) == 3


def test_bad_files_are_reported_and_the_rest_is_indexed(tmp_path):
    docs = tmp_path / "docs"
    _write_docs(docs)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage that is not a pdf")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "image.xyz").write_bytes(b"\x00\x01")
    services = _services(tmp_path / "data")
    report = build_ingestor(services, "kb1").ingest_folder(docs)
    skipped = {f.source: f.reason for f in report.skipped}
    assert set(skipped) == {"broken.pdf", "empty.txt", "image.xyz"}
    assert all(reason for reason in skipped.values())
    assert report.count("indexed") == 3


def test_tags_and_metadata_on_chunks(tmp_path):
    docs = tmp_path / "docs"
    _write_docs(docs)
    services = _services(tmp_path / "data")
    build_ingestor(services, "kb1", tags={"team": "hr"}).ingest_folder(docs)
    kb = services.kbs.open("kb1")
    doc = services.catalog.find_doc_by_source("kb1", "b.md")
    chunk = kb.get_chunks(doc.chunk_ids)[doc.chunk_ids[0]]
    assert chunk.tags == {"team": "hr"} and chunk.doc_id == doc.doc_id and chunk.doc_hash == doc.content_hash
    assert chunk.section_path == ("Battery",) and chunk.end > chunk.start and chunk.mtime > 0
    # changing the tags re-indexes the documents with the new tags
    report = build_ingestor(services, "kb1", tags={"team": "ops"}).ingest_folder(docs)
    assert report.count("updated") == 3


def test_given_titles_replace_the_parsed_ones_and_a_new_title_reindexes(tmp_path):
    docs = tmp_path / "docs"
    _write_docs(docs)
    services = _services(tmp_path / "data")
    build_ingestor(services, "kb1", titles={"a.txt": "Warranty policy"}).ingest_folder(docs)
    kb = services.kbs.open("kb1")
    titles = {d.source: d.title for d in services.catalog.list_docs("kb1")}
    assert titles == {"a.txt": "Warranty policy", "b.md": "Battery", "c.txt": "c"}  # the others keep theirs
    doc = services.catalog.find_doc_by_source("kb1", "a.txt")
    assert {c.title for c in kb.get_chunks(doc.chunk_ids).values()} == {"Warranty policy"}
    assert build_ingestor(services, "kb1", titles={"a.txt": "Warranty policy"}).ingest_folder(docs).count(
        "unchanged") == 3
    again = build_ingestor(services, "kb1", titles={"a.txt": "Warranty terms"}).ingest_folder(docs)
    assert again.count("updated") == 1 and again.count("unchanged") == 2
    assert services.catalog.find_doc_by_source("kb1", "a.txt").title == "Warranty terms"


def test_mixing_embedding_models_is_refused(tmp_path):
    docs = tmp_path / "docs"
    _write_docs(docs)
    build_ingestor(_services(tmp_path / "data", embedder=HashEmbedder(dim=64)), "kb1").ingest_folder(docs)
    other = _services(tmp_path / "data", embedder=HashEmbedder(dim=32))
    with pytest.raises(EmbeddingMismatch, match="rag reindex"):
        build_ingestor(other, "kb1")


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from ingest.service import build_ingestor
    from rag.factory import build_services
    from rag.settings import Settings
    from rag.testing import HashEmbedder
    data, docs = Path(sys.argv[1]), Path(sys.argv[2])
    services = build_services(Settings(data_dir=data, chunk_size=200, chunk_overlap=20),
                              embedder=HashEmbedder(dim=64))
    ingestor = build_ingestor(services, "kb1")
    ingestor.batch_chunks = 1  # one document per batch
    ingestor.write_behind = int(sys.argv[3])  # 4: killed from the writer thread, the next batch embedding
    lexical = ingestor.kb.lexical
    original = lexical.replace
    calls = []
    def replace(delete_ids, chunks):
        calls.append(1)
        if len(calls) == 3:  # vectors of the 3rd document are written, BM25 not yet: die here
            os.kill(os.getpid(), signal.SIGKILL)
        return original(delete_ids, chunks)
    lexical.replace = replace
    ingestor.ingest_folder(docs)
""")


@pytest.mark.parametrize("depth", [0, 4], ids=["inline", "write-behind"])
def test_kill_9_mid_ingest_then_next_run_finishes_the_job(tmp_path, depth):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"doc{i}.txt").write_text(f"Document number {i} talks about topic {i}. " * 20, encoding="utf-8")
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(data), str(docs), str(depth)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    services = _services(data)
    kb = services.kbs.open("kb1")
    assert not kb.check().ok  # the half-written document shows up
    report = build_ingestor(services, "kb1").ingest_folder(docs)
    assert report.count("indexed") >= 1
    check = kb.check()
    assert check.ok, check
    assert len(services.catalog.list_docs("kb1", state="indexed")) == 6
    assert check.vectors == check.lexical == check.catalog


def test_chunks_are_embedded_as_their_own_text(tmp_path):
    """Chunk headers (title and section path embedded with each chunk) were measured not to help
    and removed: a plain chunk is embedded and BM25-indexed as its text alone."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.md").write_text("# Acme X200 Manual\n\n## Battery\n\nThe battery lasts two hours. "
                                    + "Charging takes four hours. " * 30, encoding="utf-8")
    services = _services(tmp_path / "data", chunk_size=200, chunk_overlap=20)
    build_ingestor(services, "kb").ingest_folder(docs)
    kb = services.kbs.open("kb")
    chunks = kb.get_chunks(sorted(kb.store.ids(kb.collection))).values()
    assert len(chunks) > 1 and all(c.embed_text is None for c in chunks)
    services.close()
