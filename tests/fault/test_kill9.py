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
import threading
import time
from collections.abc import Callable, Sequence
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

Hook = Callable[[Callable[[str], None]], None]  # installs more events: called with `event(label)`


def instrument(kill_at: int | None, counter_file: Path | None = None, steps: Sequence[tuple[type, str]] = STEPS,
               hooks: Sequence[Hook] = (), trace_file: Path | None = None) -> None:
    """Count before/after events of every write step (and of what `hooks` install); SIGKILL this
    process at event `kill_at`. `counter_file` gets the count, `trace_file` a line per event
    (number, label, `time.monotonic()`): where a kill by the parent landed, when the writes run."""
    count = [0]
    guard = threading.Lock()  # the ingest writes from a writer thread

    def event(label: str) -> None:
        with guard:
            count[0] += 1
            if counter_file is not None:
                counter_file.write_text(str(count[0]))
            if trace_file is not None:
                with open(trace_file, "a", encoding="utf-8") as trace:
                    trace.write(f"{count[0]}\t{label}\t{time.monotonic():.6f}\n")
            if kill_at is not None and count[0] >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    for cls, name in steps:
        original = getattr(cls, name)
        label = f"{cls.__name__}.{name}"

        def wrapper(self, *args, __original=original, __label=label, **kwargs):
            event(f"before {__label}")
            result = __original(self, *args, **kwargs)
            event(f"after {__label}")
            return result

        setattr(cls, name, wrapper)
    for hook in hooks:
        hook(event)


def in_child(body: Callable[[], None], kill_at: int | None = None, kill_after_s: float | None = None,
             counter_file: Path | None = None, steps: Sequence[tuple[type, str]] = STEPS, hooks: Sequence[Hook] = (),
             trace_file: Path | None = None, after_event: int = 0) -> str:
    """Run `body` in a forked child; returns "killed" or "finished". `kill_after_s` counts from
    the fork or, with `after_event` and a `counter_file`, from when the child passed that event (a
    kill inside the write that follows it). A `trace_file` starts with a line `0 start <time>`."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            if trace_file is not None:
                trace_file.write_text(f"0\tstart\t{time.monotonic():.6f}\n", encoding="utf-8")
            instrument(kill_at, counter_file, steps, hooks, trace_file)
            body()
        except BaseException:  # noqa: BLE001  (a child reports by its exit status only)
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    status = None
    if kill_after_s is not None:
        while status is None and after_event and _passed(counter_file) < after_event:
            done, result = os.waitpid(pid, os.WNOHANG)
            if done:
                status = result
            time.sleep(0.001)
        deadline = time.monotonic() + kill_after_s
        while status is None and time.monotonic() < deadline:
            done, result = os.waitpid(pid, os.WNOHANG)
            if done:
                status = result
            time.sleep(max(0.0, min(0.005, deadline - time.monotonic())))
        if status is None:
            os.kill(pid, signal.SIGKILL)
    if status is None:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed with status {status}"
    return "finished"


def _passed(counter_file: Path | None) -> int:
    try:
        return int(counter_file.read_text() or 0) if counter_file is not None else 0
    except (OSError, ValueError):  # not written yet, or read while being written
        return 0


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
    """How many write events a full run of `body` has (0 when it writes nothing: an earlier run,
    killed only after it had finished its work, left nothing to do)."""
    counter = tmp_path / f"events-{name}"
    assert in_child(body, counter_file=counter) == "finished"
    return int(counter.read_text()) if counter.exists() else 0


def trace_run(body: Callable[[], None], tmp_path: Path, name: str, steps: Sequence[tuple[type, str]] = STEPS,
              hooks: Sequence[Hook] = ()) -> list[tuple[int, str, float]]:
    """A full run of `body`: its events (number, label, seconds since the fork)."""
    trace = tmp_path / f"trace-{name}"
    assert in_child(body, steps=steps, hooks=hooks, trace_file=trace) == "finished"
    return read_trace(trace)


def read_trace(trace: Path) -> list[tuple[int, str, float]]:
    """The events of a `trace_file` (without its start line), times in seconds since the fork."""
    rows = [line.split("\t") for line in trace.read_text(encoding="utf-8").splitlines()]
    start = float(rows[0][2])
    return [(int(k), label, float(t) - start) for k, label, t in rows[1:]]


class _TracedShard:
    """A qdrant-edge shard whose `update` and `flush` are events (EdgeShard is a Rust class whose
    methods cannot be patched: `shard_events` hands this wrapper to the store's write calls)."""

    def __init__(self, shard, event: Callable[[str], None]) -> None:
        self._shard, self._event = shard, event

    def update(self, operation):
        self._event("before shard.update")
        result = self._shard.update(operation)
        self._event("after shard.update")
        return result

    def flush(self):
        self._event("before shard.flush")
        result = self._shard.flush()
        self._event("after shard.flush")
        return result

    def __getattr__(self, name: str):
        return getattr(self._shard, name)


def shard_events(event: Callable[[str], None]) -> None:
    """A hook for `instrument`: every engine write of `EdgeStore` (upserts, deletes, the HNSW build:
    all go through `EdgeStore._write`) has events around each `shard.update` and `shard.flush`, so
    that kills land between an update and its flush."""
    original = EdgeStore._write

    def _write(self, name, entry, what, apply):
        return original(self, name, entry, what, lambda shard: apply(_TracedShard(shard, event)))

    EdgeStore._write = _write


def landed(trace: Path, total: int) -> str:
    """Where a kill after a delay landed: the last event the killed child's `trace_file` has."""
    events = read_trace(trace) if trace.exists() and trace.read_text(encoding="utf-8").strip() else []
    k, label = (events[-1][0], events[-1][1]) if events else (0, "start")
    return f"after event {k}/{total} ({label})"


def random_kill(rng: random.Random, body: Callable[[], None], trace: Sequence[tuple[int, str, float]],
                tmp_path: Path, name: str, *, steps: Sequence[tuple[type, str]] = STEPS, hooks: Sequence[Hook] = (),
                by_delay: bool = False, inside: Sequence[str] = ("EdgeStore.",)) -> tuple[str, str]:
    """Run `body` (whose full run gave `trace`) killed at a random event k or, `by_delay`, by the
    parent inside a random write step: a step of `trace` whose label has one of `inside` is drawn,
    and the child is killed a random part of that step's duration in the full run after it began
    (inside the stores' own code: a fsync, a rename, a SQLite commit). (outcome, where it landed)."""
    counter, killed_trace = tmp_path / f"count-{name}", tmp_path / f"killed-{name}"
    counter.unlink(missing_ok=True)
    killed_trace.unlink(missing_ok=True)
    if not by_delay:
        k = rng.randint(1, len(trace))
        return in_child(body, kill_at=k, steps=steps, hooks=hooks), f"at event {k}/{len(trace)} ({trace[k - 1][1]})"
    begins = [i for i, (_, label, _) in enumerate(trace) if label.startswith("before ") and any(m in label for m in inside)]
    assert begins, f"no step of {inside} in the trace"
    i = rng.choice(begins)
    step = trace[i][1].removeprefix("before ")
    ends = [t for _, label, t in trace[i + 1:] if label == f"after {step}"]
    duration = (ends[0] if ends else trace[-1][2]) - trace[i][2]
    delay = rng.uniform(0.0, duration)
    outcome = in_child(body, kill_after_s=delay, counter_file=counter, after_event=trace[i][0], steps=steps,
                       hooks=hooks, trace_file=killed_trace)
    return outcome, (f"{delay * 1000:.1f} of {duration * 1000:.1f} ms into {step} (event {trace[i][0]}), "
                     f"{landed(killed_trace, len(trace))}")


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
                k = rng.randint(1, max(events, 1))  # no event: the child finishes
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
    """10 changed files uploaded, the server killed at a random point of the job (twice at a write
    event, once by the parent inside a store write, after a random delay), then restarted:
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
    trace = trace_run(upload_job(data, files_v2), tmp_path, f"upload-{seed}", hooks=[shard_events])  # v1 -> v2
    events = len(trace)
    assert in_child(upload_job(data, _upload_files(1))) == "finished"
    for attempt in range(3):  # twice at a write event; once after a random delay inside a store write
        outcome, point = random_kill(rng, upload_job(data, files_v2), trace, tmp_path, f"upload-{seed}",
                                     hooks=[shard_events], by_delay=attempt == 2,
                                     inside=("EdgeStore.", "LocalBM25Index.", "shard."))
        services = open_services()
        try:
            found = assert_consistent(services, f"upload seed {seed} kill {point}")
            leftovers = {"staging": len(list((uploads_root(data) / ".staging").glob("job_*"))),
                         "bak": len(list(kb_upload_dir(data, KB).glob(".*.bak")))}
            with sqlite3.connect(data / "jobs.sqlite") as db:
                unfinished = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status IN (?, ?, ?)", UNFINISHED)]
            manager = JobManager(services, data / "jobs.sqlite")  # the restart
            try:
                recovered = [manager.wait(job_id, timeout=120) for job_id in unfinished]
            finally:
                manager.close()
            assert len(unfinished) == (1 if outcome == "killed" else 0) or (attempt == 2 and not unfinished), point
            assert all(j.status in FINAL for j in recovered)
            assert not list((uploads_root(data) / ".staging").glob("job_*")), "staging left after the restart"
            assert not list(kb_upload_dir(data, KB).glob(".*.bak")), "backups left after the restart"
            catalog = {d.source: d for d in services.catalog.list_docs(KB)}
            for name, content in files_v2.items():
                on_disk = (kb_upload_dir(data, KB) / name).read_bytes()
                assert catalog[name].state == "indexed" and catalog[name].content_hash == sha256_hex(on_disk)
            if unfinished:
                job = recovered[-1]
                assert job.status == "succeeded", job
                assert all(f["status"] in ("indexed", "updated", "unchanged") for f in job.files)
                assert all(catalog[n].content_hash == sha256_hex(b) for n, b in files_v2.items())
            assert_repaired(services, {sha256_hex(b) for b in files_v2.values()}, f"upload seed {seed}")
            services.close()
            rag_check(f"upload seed {seed}")
            FINDINGS.append(f"upload seed={seed} #{attempt + 1} {point}: {outcome}, {found}, "
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
