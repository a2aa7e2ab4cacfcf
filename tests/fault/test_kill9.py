"""Fault injection (issue 11): `kill -9` at random points of an ingest (`rag ingest` through the CLI
code path) and of an API upload job, several times in a row, with the fake hash embedder and the
real stores (Qdrant Edge + local BM25). After every kill, before any repair, every query sees a
consistent set: each hit is a live chunk of the version the catalog lists for its document (never
a pending document's new chunks, never two versions of one document, never a duplicate document).
After the repair run, `rag check` agrees and nothing of an older version is left in any store.

Each kill is a forked child (the parent has everything imported, so a child costs milliseconds)
that runs the real code with its write steps instrumented and sends itself SIGKILL at the k-th step
event (`before`/`after` each catalog and store write), k drawn from a seeded RNG over the number of
events a full run has; some children are instead killed by the parent after a random delay, which
lands anywhere, inside the stores' own code included. The seed is in the test id; set
`RAG_FAULT_SEED` to replay another series."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.adapters.bm25 import LocalBM25Index
from rag.adapters.edge_store import EdgeStore
from rag.catalog import Catalog
from rag.kb import KnowledgeBase

pytestmark = [pytest.mark.fault,
              pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")]

KB = "kb"
SEED = int(os.environ.get("RAG_FAULT_SEED", "1111"))
N_DOCS = 6
STEPS: list[tuple[type, str]] = [
    (Catalog, "mark_pending"), (Catalog, "mark_indexed"), (Catalog, "clear_garbage"), (Catalog, "remove_doc"),
    (Catalog, "mark_deleting"), (KnowledgeBase, "write"), (KnowledgeBase, "delete"), (EdgeStore, "upsert"),
    (EdgeStore, "delete"), (LocalBM25Index, "replace"), (LocalBM25Index, "delete"),
]
QUERIES = ("warranty", "battery", "edition", "release", "policy", "device", "charge", "notes")
FINDINGS: list[str] = []  # what each kill point found, printed at the end of the module (-s / -rA)


@pytest.fixture(scope="module", autouse=True)
def warm(tmp_path_factory):
    """Load once, in the parent, what every child would load again (the text parser's language
    data, the tokenizers, the CLI): forked children inherit it."""
    from cli.main import app  # noqa: F401
    from ingest.parse import parse_file
    from rag.text import tokenize

    sample = tmp_path_factory.mktemp("warm") / "warm.txt"
    sample.write_text("Edition one covers the warranty. 保修期两年。", encoding="utf-8")
    parse_file(sample)
    tokenize("warm up the tokenizer 保修期两年")


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("RAG_") and key != "RAG_FAULT_SEED":
            monkeypatch.delenv(key)
    data = tmp_path / "data"
    for key, value in {"RAG_DATA_DIR": str(data), "RAG_EMBED_MODEL": "hash", "RAG_CHUNK_SIZE": "200",
                       "RAG_CHUNK_OVERLAP": "20", "RAG_EMBED_BATCH_SIZE": "2", "RAG_RERANK_MODEL": "none"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return data


def write_version(folder: Path, version: int, rng: random.Random) -> None:
    """N_DOCS documents whose every sentence names the version (no chunk id is shared across
    versions); some documents of later versions are left out (pruned) or added."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.txt"):
        old.unlink()
    topics = ["warranty", "battery", "policy", "device", "charge", "notes", "screen", "travel"]
    for i in range(N_DOCS + version % 2):
        if version > 1 and rng.random() < 0.15:
            continue  # a removed file: pruned by the run
        words = " ".join(rng.choice(topics) for _ in range(6))
        sentence = f"Edition {version} release {version} of document {i} covers {words}. "
        (folder / f"doc{i}.txt").write_text(sentence * rng.randint(4, 9), encoding="utf-8")


# -- the child ----------------------------------------------------------------------------------

def instrument(kill_at: int | None, counter_file: Path | None = None) -> None:
    """Count before/after events of every write step; SIGKILL this process at event `kill_at`."""
    count = [0]

    def event() -> None:
        count[0] += 1
        if counter_file is not None:
            counter_file.write_text(str(count[0]))
        if kill_at is not None and count[0] >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    for cls, name in STEPS:
        original = getattr(cls, name)

        def wrapper(self, *args, __original=original, **kwargs):
            event()
            result = __original(self, *args, **kwargs)
            event()
            return result

        setattr(cls, name, wrapper)


def in_child(body: Callable[[], None], kill_at: int | None = None, kill_after_s: float | None = None,
             counter_file: Path | None = None) -> str:
    """Run `body` in a forked child; returns "killed" or "finished"."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            instrument(kill_at, counter_file)
            body()
        except BaseException:  # noqa: BLE001  (a child reports by its exit status only)
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    status = None
    if kill_after_s is not None:
        deadline = time.monotonic() + kill_after_s
        while status is None and time.monotonic() < deadline:
            done, result = os.waitpid(pid, os.WNOHANG)
            if done:
                status = result
            time.sleep(0.005)
        if status is None:
            os.kill(pid, signal.SIGKILL)
    if status is None:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed with status {status}"
    return "finished"


def cli_ingest(docs: Path) -> Callable[[], None]:
    def body() -> None:
        from cli.main import app

        app(["ingest", str(docs), "--kb", KB, "-q"], standalone_mode=False)

    return body


# -- the checks ---------------------------------------------------------------------------------

def open_services():
    from rag.factory import build_services
    from rag.settings import load_settings

    return build_services(load_settings())


def assert_consistent(services, label: str) -> dict[str, int]:
    """Every query sees only live chunks of the version the catalog lists: returns counts."""
    kb = services.kbs.open(KB)
    catalog = {d.doc_id: d for d in services.catalog.list_docs(KB)}
    hits = set()
    for q in QUERIES:
        hits.update(h.chunk_id for h in kb.search_dense(kb.embed_queries([q])[0], 200))
        hits.update(h.chunk_id for h in kb.search_bm25(q, 200))
    chunks = kb.get_chunks(sorted(hits))
    assert set(chunks) == hits, f"{label}: hits without a payload"
    versions: dict[str, set[str]] = {}
    doc_ids: dict[str, set[str]] = {}
    for chunk in chunks.values():
        record = catalog.get(chunk.doc_id)
        assert record is not None, f"{label}: a hit of a document the catalog does not have: {chunk.source}"
        assert record.state in ("indexed", "pending"), f"{label}: a hit of a {record.state} document"
        assert chunk.id in record.chunk_ids, f"{label}: a hit that is not a live chunk of {chunk.source}"
        assert chunk.doc_hash == record.content_hash, f"{label}: {chunk.source} answers with another version"
        versions.setdefault(chunk.source, set()).add(chunk.doc_hash)
        doc_ids.setdefault(chunk.source, set()).add(chunk.doc_id)
    assert all(len(v) == 1 for v in versions.values()), f"{label}: two versions of one document: {versions}"
    assert all(len(v) == 1 for v in doc_ids.values()), f"{label}: a duplicated document: {doc_ids}"
    pending = [d.source for d in catalog.values() if d.state != "indexed"]
    garbage = [d.source for d in services.catalog.docs_with_garbage(KB)]
    report = kb.check()
    return {"hits": len(hits), "pending": len(pending), "garbage": len(garbage),
            "extra_ids": len(report.extra_in_vectors) + len(report.extra_in_lexical), "check_ok": report.ok}


def rag_check(label: str) -> None:
    """`rag check` itself, in its own process as from a shell (an Edge shard is one process's at a
    time), while no other store is open; it exits 0 only when the stores agree."""

    def body() -> None:
        from cli.main import app

        result = CliRunner().invoke(app, ["check", "--kb", KB])
        if result.exit_code != 0:
            raise AssertionError(result.output)

    assert in_child(body) == "finished", f"{label}: rag check failed after the repair"


def assert_repaired(services, docs_hashes: set[str] | None, label: str) -> None:
    kb = services.kbs.open(KB)
    assert kb.check().ok, f"{label}: {kb.check()}"
    stored = kb.get_chunks(sorted(kb.store.ids(kb.collection)))
    assert set(stored) == kb.lexical.ids() == kb.live_ids(), label
    if docs_hashes is not None:
        left = {c.source for c in stored.values() if c.doc_hash not in docs_hashes}
        assert not left, f"{label}: chunks of an older version survive: {left}"
    assert not services.catalog.docs_with_garbage(KB) and not services.catalog.list_docs(KB, state="pending")


def hashes_of(folder: Path) -> set[str]:
    from rag.ids import sha256_hex

    return {sha256_hex(p.read_bytes()) for p in folder.glob("*.txt")}


def calibrate(body: Callable[[], None], tmp_path: Path, name: str) -> int:
    counter = tmp_path / f"events-{name}"
    assert in_child(body, counter_file=counter) == "finished"
    return int(counter.read_text())


# -- the tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_kill_9_at_random_points_of_an_ingest(env, tmp_path, seed):
    rng = random.Random(seed)
    docs = tmp_path / "docs"
    write_version(docs, 1, rng)
    assert in_child(cli_ingest(docs)) == "finished"  # version 1, complete
    for version in (2, 3):  # each version: killed once or twice, then a repair run (itself killed once)
        write_version(docs, version, rng)
        events = None
        for attempt in range(2):
            if rng.random() < 0.3:
                delay = rng.uniform(0.0, 0.6)
                outcome, point = in_child(cli_ingest(docs), kill_after_s=delay), f"after {delay:.2f}s"
            else:
                if events is None:
                    events = _events_for(docs, env, tmp_path, seed, version)
                k = rng.randint(1, events)
                outcome, point = in_child(cli_ingest(docs), kill_at=k), f"at event {k}/{events}"
            services = open_services()
            try:
                found = assert_consistent(services, f"seed {seed} v{version} kill {attempt + 1} {point}")
            finally:
                services.close()
            FINDINGS.append(f"ingest seed={seed} v{version} #{attempt + 1} {point}: {outcome}, {found}")
        assert in_child(cli_ingest(docs)) == "finished"  # the repair run
        services = open_services()
        try:
            assert_consistent(services, f"seed {seed} v{version} repaired")
            assert_repaired(services, hashes_of(docs), f"seed {seed} v{version}")
        finally:
            services.close()
        rag_check(f"seed {seed} v{version}")


def _events_for(docs: Path, data: Path, tmp_path: Path, seed: int, version: int) -> int:
    """How many write events a full run of this version has: measured on a copy of the data."""
    import shutil

    copy = tmp_path / f"calib-{seed}-{version}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data, copy)
    previous = os.environ["RAG_DATA_DIR"]
    os.environ["RAG_DATA_DIR"] = str(copy)
    try:
        return calibrate(cli_ingest(docs), tmp_path, f"{seed}-{version}")
    finally:
        os.environ["RAG_DATA_DIR"] = previous
        shutil.rmtree(copy, ignore_errors=True)


def upload_job(data: Path, names_and_bytes: dict[str, bytes]) -> Callable[[], None]:
    """A child that runs one API upload job (the JobManager of `rag serve`) to its end."""

    def body() -> None:
        from api.jobs import Job, JobManager
        from api.uploads import staging_dir

        services = open_services()
        manager = JobManager(services, data / "jobs.sqlite")
        job_id = f"job_{random.Random(len(names_and_bytes) + int(time.time() * 1e6)).getrandbits(64):016x}"
        staging = staging_dir(data, job_id)
        staging.mkdir(parents=True)
        staged = {}
        for name, content in names_and_bytes.items():
            (staging / name).write_bytes(content)
            staged[name] = staging / name
        entries = [{"filename": n, "size": len(b), "status": "queued"} for n, b in names_and_bytes.items()]
        manager.submit(Job(job_id, KB, "admin", "queued", time.time(), entries), staged)
        manager.wait(job_id, timeout=120)
        manager.close()
        services.close()

    return body


def _upload_files(version: int, n: int = 10) -> dict[str, bytes]:
    return {f"file{i}.txt": (f"Upload edition {version} release {version} of file {i} about warranty notes. " * 6)
            .encode() for i in range(n)}


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_kill_9_of_the_server_during_an_upload_job(env, tmp_path, seed):
    """10 changed files uploaded, the server killed at a random point of the job, then restarted:
    queries were consistent meanwhile, the restart finishes the job and says so, no staging folder
    or backup is left, and every file is indexed with its new bytes."""
    from api.jobs import FINAL, UNFINISHED, JobManager
    from api.uploads import kb_upload_dir, uploads_root
    from rag.ids import sha256_hex

    rng = random.Random(seed)
    data = env
    services = open_services()
    services.kbs.open_or_create(KB)
    services.close()
    assert in_child(upload_job(data, _upload_files(1))) == "finished"
    files_v2 = _upload_files(2)
    events = calibrate(upload_job(data, files_v2), tmp_path, f"upload-{seed}")  # a whole v1 -> v2 job
    assert in_child(upload_job(data, _upload_files(1))) == "finished"
    for attempt in range(2):
        k = rng.randint(1, events)
        outcome = in_child(upload_job(data, files_v2), kill_at=k)
        services = open_services()
        try:
            found = assert_consistent(services, f"upload seed {seed} kill at {k}/{events}")
            leftovers = {"staging": len(list((uploads_root(data) / ".staging").glob("job_*"))),
                         "bak": len(list(kb_upload_dir(data, KB).glob(".*.bak")))}
            with sqlite3.connect(data / "jobs.sqlite") as db:
                unfinished = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status IN (?, ?, ?)", UNFINISHED)]
            manager = JobManager(services, data / "jobs.sqlite")  # the restart
            try:
                recovered = [manager.wait(job_id, timeout=120) for job_id in unfinished]
            finally:
                manager.close()
            assert len(unfinished) == (1 if outcome == "killed" else 0)
            assert all(j.status in FINAL for j in recovered)
            assert not list((uploads_root(data) / ".staging").glob("job_*")), "staging left after the restart"
            assert not list(kb_upload_dir(data, KB).glob(".*.bak")), "backups left after the restart"
            catalog = {d.source: d for d in services.catalog.list_docs(KB)}
            for name, content in files_v2.items():
                on_disk = (kb_upload_dir(data, KB) / name).read_bytes()
                assert catalog[name].state == "indexed" and catalog[name].content_hash == sha256_hex(on_disk)
            if outcome == "killed":
                job = recovered[-1]
                assert job.status == "succeeded", job
                assert all(f["status"] in ("indexed", "updated", "unchanged") for f in job.files)
                assert all(catalog[n].content_hash == sha256_hex(b) for n, b in files_v2.items())
            assert_repaired(services, {sha256_hex(b) for b in files_v2.values()}, f"upload seed {seed}")
            services.close()
            rag_check(f"upload seed {seed}")
            FINDINGS.append(f"upload seed={seed} #{attempt + 1} at event {k}/{events}: {outcome}, {found}, "
                            f"left before restart {leftovers}, "
                            f"recovery: {recovered[0].recovery if recovered else None}")
        finally:
            services.close()
        assert in_child(upload_job(data, _upload_files(1))) == "finished"  # back to version 1


def test_report_findings():
    """Not a check: prints what the kill points found (run with -rA or -s to see it)."""
    print(f"\n{len(FINDINGS)} kill points:")
    for line in FINDINGS:
        print("  " + line)
