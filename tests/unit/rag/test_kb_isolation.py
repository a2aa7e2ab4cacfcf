"""A collection belongs to exactly one knowledge base (issue 11 item 4), and a knowledge base is
created under its write lock (item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys

import pytest

from rag.catalog import Catalog
from rag.errors import InvalidRequest
from tests.unit.cli_helpers import ROOT, env, run  # noqa: F401  (env is a fixture)
from tests.unit.rag.test_kb_locks import held_by_another_thread


def test_a_reindexed_collection_cannot_be_taken_by_another_kb(env, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("Zebra migration notes. " * 30, encoding="utf-8")
    assert run("ingest", str(env), "--kb", "a1", "-q").exit_code == 0
    result = run("reindex", "--kb", "a1")
    assert result.exit_code == 0 and "a1__v2" in result.output
    clash = run("ingest", str(other), "--kb", "a1__v2", "-q")
    assert clash.exit_code == 2 and "reserved" in clash.output
    assert run("drop", "--kb", "a1__v2", "--yes").exit_code == 2  # no such knowledge base; a1 untouched
    assert run("check", "--kb", "a1").exit_code == 0
    kbs = {k["name"]: k for k in json.loads(run("kbs", "--json").stdout)}
    assert set(kbs) == {"a1"} and kbs["a1"]["documents"] == 4 and kbs["a1"]["collection"] == "a1__v2"
    # the next reindex picks a collection nobody owns
    again = run("reindex", "--kb", "a1")
    assert again.exit_code == 0 and "a1__v3" in again.output


def test_the_catalog_refuses_a_second_owner_of_a_collection(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.create_kb("a1", "m", 8, "a1")
    catalog.update_kb("a1", embed_model="m", dim=8, collection="a1__v2")
    with pytest.raises(InvalidRequest, match="belongs to knowledge base 'a1'"):
        catalog.create_kb("b", "m", 8, "a1__v2")
    catalog.create_kb("b", "m", 8, "b")
    with pytest.raises(InvalidRequest, match="belongs to knowledge base 'a1'"):
        catalog.update_kb("b", embed_model="m", dim=8, collection="a1__v2")
    with pytest.raises(InvalidRequest, match="reserved"):
        catalog.create_kb("x__v2", "m", 8, "x__v2")
    assert catalog.collection_owner("a1__v2") == "a1" and catalog.collection_owner("a1") is None


def test_an_existing_kb_with_a_double_underscore_keeps_working(env, tmp_path):
    """Knowledge bases made before `__` was reserved still open, ingest and answer."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(data / "catalog.sqlite")
    catalog.db.execute("INSERT INTO kbs VALUES (?,?,?,?,?,?)",  # as an older version wrote it
                       ("old__kb", "hash-bow-256", 256, "old__kb", 0.0, "{}"))
    catalog.close()
    from rag.factory import build_services
    from rag.settings import load_settings

    services = build_services(load_settings())
    services.store.ensure_collection("old__kb", 256)
    services.close()
    result = run("ingest", str(env), "--kb", "old__kb", "-q")
    assert result.exit_code == 0, result.output
    assert run("check", "--kb", "old__kb").exit_code == 0


def test_two_ingests_creating_the_same_new_kb_at_once(env, tmp_path):
    """Both start together on a kb that does not exist: one creates and indexes it, the other
    indexes it too (it waited for nothing: it got the lock after) or says it is busy (exit 75);
    never an IO error, never a missing knowledge base."""
    cmd = [sys.executable, "-c", "from cli.main import app; app()", "ingest", str(env), "--kb", "fresh", "-q"]
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in outs)
    assert codes in ([0, 0], [0, 75]), outs
    for code, _, err in outs:
        if code == 75:
            assert "being written by another" in err
    check = run("check", "--kb", "fresh")
    assert check.exit_code == 0, check.output


def test_two_api_requests_creating_the_same_kb_at_once(tmp_path):
    import threading

    from fastapi.testclient import TestClient

    from tests.unit.api_helpers import ADMIN, make_app

    app, services = make_app(tmp_path)
    codes: list[int] = []
    with TestClient(app) as client:
        barrier = threading.Barrier(4)

        def create() -> None:
            barrier.wait()
            codes.append(client.post("/v1/kbs", json={"name": "fresh"}, headers=ADMIN).status_code)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(codes)[0] == 201 and codes.count(201) == 1 and set(codes) <= {201, 409}, codes
    assert services.kbs.open("fresh").check().ok


def test_a_restart_settles_backups_and_staging_no_job_will_finish(tmp_path):
    """Leftovers of jobs that are finished (or unknown): the staging folder is removed; a backup
    whose replacement the catalog indexed is dropped, one whose replacement it did not is put back."""
    from api.job_files import STAGING_GRACE_S
    from api.jobs import JobManager
    from api.uploads import kb_upload_dir, staging_dir
    from ingest.service import build_ingestor
    from tests.unit.api_helpers import make_services

    services = make_services(tmp_path)
    data = services.data_dir
    upload_dir = kb_upload_dir(data, "handbook")
    upload_dir.mkdir(parents=True)
    (upload_dir / "kept.txt").write_text("The new kept text about kettles. " * 5, encoding="utf-8")
    build_ingestor(services, "handbook").ingest_files(upload_dir, [upload_dir / "kept.txt"])
    (upload_dir / ".kept.txt.job_00000000000000aa.bak").write_text("old kept", encoding="utf-8")
    (upload_dir / "restored.txt").write_text("never indexed new bytes", encoding="utf-8")
    (upload_dir / ".restored.txt.job_00000000000000aa.bak").write_text("previous bytes", encoding="utf-8")
    orphan = staging_dir(data, "job_00000000000000aa")
    orphan.mkdir(parents=True)
    (orphan / "x.txt").write_text("staged", encoding="utf-8")
    receiving = staging_dir(data, "job_00000000000000bb")  # an upload another replica is still receiving
    receiving.mkdir(parents=True)
    old = time.time() - STAGING_GRACE_S - 1
    os.utime(orphan, (old, old))
    JobManager(services, data / "jobs.sqlite").close()
    assert not orphan.exists() and receiving.exists()
    assert sorted(p.name for p in upload_dir.iterdir() if not p.name.startswith(".")) == ["kept.txt", "restored.txt"]
    assert (upload_dir / "restored.txt").read_text(encoding="utf-8") == "previous bytes"
    # the bytes that were never indexed wait for a retry of their job (api/jobs.py)
    kept_for_retry = upload_dir / ".retry" / "job_00000000000000aa" / "restored.txt"
    assert kept_for_retry.read_text(encoding="utf-8") == "never indexed new bytes"
    assert not list(upload_dir.glob(".*.bak"))


@pytest.mark.parametrize("command", [["ingest", "{docs}", "--kb", "busy", "-q"], ["rm", "faq.csv", "--kb", "busy"],
                                     ["reindex", "--kb", "busy"], ["drop", "--kb", "busy", "--yes"]])
def test_writes_to_a_busy_kb_exit_75(env, command):
    from rag.factory import build_services
    from rag.settings import load_settings

    assert run("ingest", str(env), "--kb", "busy", "-q").exit_code == 0
    services = build_services(load_settings())
    try:
        with held_by_another_thread(services.kbs, "busy"):  # the lock is re-entrant in its holder
            result = run(*[part.format(docs=env) for part in command])
    finally:
        services.close()
    assert result.exit_code == 75 and "being written" in result.output, result.output
    assert run("check", "--kb", "busy").exit_code == 0


def test_rm_on_an_unknown_kb_does_not_create_it(env):
    result = run("rm", "faq.csv", "--kb", "typo")
    assert result.exit_code == 2 and "unknown knowledge base 'typo'" in result.output
    assert json.loads(run("kbs", "--json").stdout) == []
