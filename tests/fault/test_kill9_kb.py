"""`kill -9` at random points of the knowledge-base lifecycle (issue 31): `rag reindex`, `rag drop`
and the vector store's writes and flushes inside an ingest, with the real stores (Qdrant Edge +
local BM25) and the fake hash embedder, in forked children as in `test_kill9`.

Each kill is either at a random write event k (before/after each catalog, store and BM25 step, and
around each `shard.update`/`shard.flush`), k drawn over the events a full run has, or by the parent
after a random delay inside the window in which a traced full run wrote to the stores. After each
kill the next command (a search, `rag check`, `rag reindex`, `rag check --repair`, `rag ingest`)
works, `rag check` ends clean, nothing of a dropped or replaced collection is left on disk, and no
document is lost: each is indexed in its old or its new version, or reported by the repair.

`RAG_FAULT_SEED` replays another series; `RAG_FAULT_ROUNDS` (default 1) multiplies the kills."""

from __future__ import annotations

import os
import random
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.adapters.bm25 import LocalBM25Index
from rag.adapters.edge_store import EdgeStore
from rag.catalog import Catalog
from rag.kb import KnowledgeBases
from tests.fault.test_kill9 import (  # noqa: F401  (env and warm are fixtures)
    FINDINGS,
    KB,
    SEED,
    STEPS,
    assert_consistent,
    assert_repaired,
    env,
    hashes_of,
    in_child,
    open_services,
    rag_check,
    random_kill,
    shard_events,
    trace_run,
    warm,
    write_version,
)

pytestmark = [pytest.mark.fault,
              pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")]

ROUNDS = int(os.environ.get("RAG_FAULT_ROUNDS", "1"))
LIFECYCLE_STEPS: list[tuple[type, str]] = [
    (EdgeStore, "ensure_collection"), (EdgeStore, "upsert"), (EdgeStore, "drop_collection"),
    (LocalBM25Index, "add"), (LocalBM25Index, "drop"), (Catalog, "update_kb"), (Catalog, "mark_dropping"),
    (Catalog, "delete_kb"), (KnowledgeBases, "drop_orphans"),
]
INGEST_STEPS = [*STEPS, (EdgeStore, "optimize")]


def cli(*args: str) -> Callable[[], None]:
    """A child body running one CLI command as `rag` does (errors propagate: the child fails)."""

    def body() -> None:
        from cli.main import app

        app(list(args), standalone_mode=False)

    return body


def run_cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """A CLI command in its own process (an Edge shard is one process's at a time): exit code, output."""
    out = tmp_path / "cli-output"

    def body() -> None:
        from cli.main import app

        result = CliRunner().invoke(app, list(args))
        out.write_text(f"{result.exit_code}\n{result.output}", encoding="utf-8")

    assert in_child(body) == "finished"
    code, _, output = out.read_text(encoding="utf-8").partition("\n")
    return int(code), output


def documents() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The catalog's documents of KB: source -> (content hash, chunk ids), all indexed."""
    services = open_services()
    try:
        docs = services.catalog.list_docs(KB)
        assert all(d.state == "indexed" for d in docs), [(d.source, d.state) for d in docs]
        return {d.source: (d.content_hash, tuple(sorted(d.chunk_ids))) for d in docs}
    finally:
        services.close()


def on_disk(data: Path) -> tuple[list[str], list[str]]:
    """The folders under the vector store and the BM25 root (hidden ones included)."""
    return tuple(sorted(p.name for p in root.iterdir()) if root.is_dir() else []  # type: ignore[return-value]
                 for root in (data / "vectors-edge", data / "bm25"))


def current_collection() -> str:
    services = open_services()
    try:
        return services.catalog.require_kb(KB).collection
    finally:
        services.close()


def consistent(label: str) -> dict[str, int]:
    services = open_services()  # the next start: opening the stores recovers them
    try:
        return assert_consistent(services, label)
    finally:
        services.close()


def check_output_only(output: str, allowed: Sequence[str], label: str) -> None:
    """`rag check` listed nothing but the `allowed` kinds of problems."""
    listed = [line.split(":")[0].strip() for line in output.splitlines() if line.startswith("  ")]
    assert set(listed) <= set(allowed), f"{label}: {output}"


# -- reindex ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [SEED])
def test_kill_9_of_a_reindex(env, tmp_path, seed):
    """`rag reindex` killed anywhere: queries stay consistent on the old or the new collection,
    `rag check` reports at most orphans, the next `rag reindex` or `rag check --repair` leaves it
    clean with nothing but the current collection on disk, and every document is unchanged."""
    rng = random.Random(seed)
    docs = tmp_path / "docs"
    write_version(docs, 1, rng)
    assert in_child(cli("ingest", str(docs), "--kb", KB, "-q")) == "finished"
    before = documents()
    trace = trace_run(cli("reindex", "--kb", KB), tmp_path, f"reindex-{seed}", LIFECYCLE_STEPS, [shard_events])
    for attempt in range(3 * ROUNDS):
        outcome, point = random_kill(rng, cli("reindex", "--kb", KB), trace, tmp_path, f"reindex-{seed}",
                                     steps=LIFECYCLE_STEPS, hooks=[shard_events], by_delay=attempt % 3 == 2,
                                     inside=("EdgeStore.", "LocalBM25Index.", "shard.", "Catalog."))
        label = f"reindex seed {seed} #{attempt + 1} {point}"
        found = consistent(label)
        code, output = run_cli(tmp_path, "check", "--kb", KB)
        check_output_only(output, ("orphan_collections", "orphan_lexical"), label)
        assert code in (0, 1), f"{label}: {output}"
        orphans = on_disk(env)
        then = ("reindex", "--kb", KB) if attempt % 2 else ("check", "--kb", KB, "--repair")
        code, after = run_cli(tmp_path, *then)
        assert code == 0, f"{label}: `rag {' '.join(then)}`: {after}"
        rag_check(label)
        collection = current_collection()
        assert on_disk(env) == ([collection], [collection]), f"{label}: left on disk: {on_disk(env)}"
        assert documents() == before, f"{label}: the documents changed"
        consistent(f"{label}, then {then[0]}")
        FINDINGS.append(f"reindex seed={seed} #{attempt + 1} {point}: {outcome}, {found}, on disk {orphans}, "
                        f"then `{' '.join(then[:1] + then[3:])}`: clean")


# -- drop ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [SEED])
def test_kill_9_of_a_drop(env, tmp_path, seed):
    """`rag drop` killed anywhere (of a knowledge base reindexed once, so that it has a `__v2`
    collection): `rag kbs` no longer lists it, `rag check` of another knowledge base works, a
    fresh `rag ingest` of the name indexes the whole (changed) folder, nothing of the old
    knowledge base is left, and the other knowledge base is untouched."""
    rng = random.Random(seed)
    docs, other = tmp_path / "docs", tmp_path / "other"
    write_version(docs, 1, rng)
    write_version(other, 4, rng)
    assert in_child(cli("ingest", str(other), "--kb", "keep", "-q")) == "finished"
    kept = run_cli(tmp_path, "docs", "--kb", "keep")

    def fresh_kb() -> None:
        write_version(docs, 1, random.Random(seed))
        assert in_child(cli("ingest", str(docs), "--kb", KB, "-q")) == "finished"
        assert in_child(cli("reindex", "--kb", KB)) == "finished"

    fresh_kb()
    trace = trace_run(cli("drop", "--kb", KB, "--yes"), tmp_path, f"drop-{seed}", LIFECYCLE_STEPS)
    for attempt in range(2 * ROUNDS):
        fresh_kb()
        outcome, point = random_kill(rng, cli("drop", "--kb", KB, "--yes"), trace, tmp_path, f"drop-{seed}",
                                     steps=LIFECYCLE_STEPS, by_delay=attempt % 2 == 1,
                                     inside=("EdgeStore.", "LocalBM25Index.", "Catalog."))
        label = f"drop seed {seed} #{attempt + 1} {point}"
        left = on_disk(env)
        code, listed = run_cli(tmp_path, "kbs")
        assert code == 0 and f"{KB}:" not in listed, f"{label}: {listed}"
        code, output = run_cli(tmp_path, "check", "--kb", "keep")
        assert code in (0, 1), f"{label}: {output}"
        check_output_only(output, ("half_dropped", "orphan_collections", "orphan_lexical"), label)
        write_version(docs, 2, rng)  # the new knowledge base of the same name: other files
        code, output = run_cli(tmp_path, "ingest", str(docs), "--kb", KB, "-q")
        assert code == 0, f"{label}: {output}"
        rag_check(label)
        services = open_services()
        try:
            assert_repaired(services, hashes_of(docs), label)
            indexed = {d.source: d.content_hash for d in services.catalog.list_docs(KB)}
            assert {Path(s).name for s in indexed} == {p.name for p in docs.glob("*.txt")}, label
            assert services.catalog.require_kb(KB).collection == KB
        finally:
            services.close()
        assert on_disk(env) == (sorted(["keep", KB]), sorted(["keep", KB])), f"{label}: left on disk: {on_disk(env)}"
        assert run_cli(tmp_path, "docs", "--kb", "keep") == kept, label
        FINDINGS.append(f"drop seed={seed} #{attempt + 1} {point}: {outcome}, on disk {left}, then kbs/check/ingest: "
                        "clean")
        assert in_child(cli("drop", "--kb", KB, "--yes")) == "finished"


# -- store writes and flushes ---------------------------------------------------------------------

def many_docs(folder: Path, version: int, n: int = 6) -> list[Path]:
    """`n` one-chunk documents, each changed by every version."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"note{i:02d}.txt" for i in range(n)]
    for i, path in enumerate(paths):
        path.write_text(f"Edition {version} note {i} about warranty and battery care. Release {version} of note {i}.",
                        encoding="utf-8")
    return paths


def ingested(label: str) -> dict[str, str]:
    """File name -> content hash of KB's documents, once the stores agree with the catalog."""
    services = open_services()
    try:
        assert_repaired(services, None, label)
        return {Path(d.source).name: d.content_hash for d in services.catalog.list_docs(KB)}
    finally:
        services.close()


@pytest.mark.parametrize("seed", [SEED])
def test_kill_9_inside_the_vector_store_writes_of_an_ingest(env, tmp_path, seed):
    """An ingest of many small changed documents (a write and a flush per batch of 2) killed by the
    parent inside a random `shard.update`/`shard.flush` (a random part of its duration in a full
    run after it began), or at an event between an update and its flush: the stores open
    (recovery) with consistent queries; from a copy of the killed state `rag check --repair` ends
    clean with each document in its old or new version (or reported); the next `rag ingest` and
    `rag check` are clean with every document of the folder in its new version."""
    from rag.ids import sha256_hex

    rng = random.Random(seed)
    docs = tmp_path / "docs"
    ingest = cli("ingest", str(docs), "--kb", KB, "-q")
    many_docs(docs, 1)
    assert in_child(ingest) == "finished"
    copy = tmp_path / "calibration"
    shutil.copytree(env, copy)
    many_docs(docs, 2)
    os.environ["RAG_DATA_DIR"] = str(copy)  # a full v1 -> v2 run on a copy: its events and their times
    try:
        trace = trace_run(ingest, tmp_path, f"flush-{seed}", INGEST_STEPS, [shard_events])
    finally:
        os.environ["RAG_DATA_DIR"] = str(env)
        shutil.rmtree(copy)
    between = [k for k, label, _ in trace if label in ("after shard.update", "before shard.flush")]
    old = {p.name: sha256_hex(p.read_bytes()) for p in many_docs(docs, 1)}
    for attempt in range(3 * ROUNDS):
        new = {p.name: sha256_hex(p.read_bytes()) for p in many_docs(docs, attempt + 2)}
        if attempt % 3 == 2:
            k = rng.choice(between)
            outcome = in_child(ingest, kill_at=k, steps=INGEST_STEPS, hooks=[shard_events])
            point = f"at event {k}/{len(trace)} ({trace[k - 1][1]})"
        else:
            outcome, point = random_kill(rng, ingest, trace, tmp_path, f"flush-{seed}", steps=INGEST_STEPS,
                                         hooks=[shard_events], by_delay=True, inside=("shard.",))
        label = f"flush seed {seed} #{attempt + 1} {point}"
        found = consistent(label)
        killed_state = tmp_path / "killed-state"
        shutil.rmtree(killed_state, ignore_errors=True)
        shutil.copytree(env, killed_state)
        os.environ["RAG_DATA_DIR"] = str(killed_state)
        try:
            code, repaired = run_cli(tmp_path, "check", "--kb", KB, "--repair")
            assert code == 0 and "ok: stores agree" in repaired, f"{label}: repair: {repaired}"
            after_repair = ingested(f"{label} (repaired)")
        finally:
            os.environ["RAG_DATA_DIR"] = str(env)
        for name, digest in new.items():
            assert after_repair.get(name) in (old[name], digest) or name in repaired, f"{label}: {name} lost"
        code, output = run_cli(tmp_path, "ingest", str(docs), "--kb", KB, "-q")
        assert code == 0, f"{label}: {output}"
        rag_check(label)
        assert ingested(label) == new, f"{label}: the next ingest did not index every document"
        FINDINGS.append(f"flush seed={seed} #{attempt + 1} {point}: {outcome}, {found}, repair from the killed "
                        f"state: {sum(after_repair.get(n) == old[n] for n in new)} old/"
                        f"{sum(after_repair.get(n) == new[n] for n in new)} new, then ingest + check: clean")
        old = new


def test_report_kill_points():
    """Not a check: prints every kill point of the fault suite so far and their count per category
    (the first word of each FINDINGS line); run with -rA or -s to see it."""
    counts: dict[str, int] = {}
    for line in FINDINGS:
        counts[line.split(" ", 1)[0]] = counts.get(line.split(" ", 1)[0], 0) + 1
    print(f"\n{len(FINDINGS)} kill points: {counts}")
    for line in FINDINGS:
        print("  " + line)
