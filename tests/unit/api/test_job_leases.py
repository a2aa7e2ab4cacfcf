"""Leased ingest jobs: a job whose server stopped is resumed by another replica once its lease
expires (at once by a restart on its own host), exactly once; a running replica keeps its jobs by
renewing their leases. On the SQLite jobs file and on a real PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import pytest

from api.jobs import MIGRATIONS, FINAL, Job, JobManager, holder_gone, new_holder
from rag.db import Database
from tests.unit.api.test_jobs_store_failure import FILES, new_job, stage
from tests.unit.kb_fixtures import KB, build_services

OTHER_HOST = "another-host.example:4242:0badc0de"


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request, tmp_path):
    extra = {"catalog_url": request.getfixturevalue("pg_url")} if request.param == "postgresql" else {}
    services = build_services(tmp_path, backend="edge", dim=64, **extra)
    yield services
    services.close()


def left_by(services, holder: str, lease_until: float, status: str = "running") -> Job:
    """A job another server was running when it stopped: its row, leased by `holder`, and its staged files."""
    job = new_job(status)
    stage(services, job.id)
    db = services.database("jobs")
    db.migrate("jobs", MIGRATIONS)
    db.upsert("jobs", {"id": job.id, "kb": job.kb, "owner": job.owner, "status": status, "created_at": job.created_at,
                       "data": json.dumps(asdict(job)), "lease_holder": holder, "lease_until": lease_until}, ("id",))
    db.close()
    return job


def lease_of(services, job_id: str) -> tuple[str, float, str]:
    db = services.database("jobs")
    row = db.one("SELECT lease_holder, lease_until, status FROM jobs WHERE id=?", (job_id,))
    db.close()
    return row["lease_holder"], row["lease_until"], row["status"]


def test_a_job_whose_lease_expired_is_resumed_by_another_replica(services):
    job = left_by(services, OTHER_HOST, time.time() - 1)
    manager = JobManager(services, services.database("jobs"), lease_s=2)
    try:
        done = manager.wait(job.id, timeout=60)
    finally:
        manager.close()
    assert done.status == "succeeded" and [f["status"] for f in done.files] == ["indexed", "indexed"]
    assert OTHER_HOST in done.recovery and manager.holder in done.recovery and "lease expired" in done.recovery
    assert {services.catalog.find_doc_by_source(KB, n).state for n in FILES} == {"indexed"}
    assert lease_of(services, job.id)[:1] == ("",)  # a finished job holds no lease


def test_a_live_lease_is_left_alone_until_it_expires(services):
    job = left_by(services, OTHER_HOST, time.time() + 3)
    manager = JobManager(services, services.database("jobs"), lease_s=2)
    try:
        time.sleep(1.0)
        assert lease_of(services, job.id)[0] == OTHER_HOST  # its holder may still be running it
        done = manager.wait(job.id, timeout=60)  # claimed by the renewal loop once the lease ran out
    finally:
        manager.close()
    assert done.status == "succeeded" and "lease expired" in done.recovery


def test_replicas_that_find_the_same_orphan_resume_it_once(services):
    job = left_by(services, OTHER_HOST, time.time() - 1)
    managers: list[JobManager] = []
    start = threading.Barrier(3)

    def replica() -> None:
        start.wait()
        managers.append(JobManager(services, services.database("jobs"), lease_s=2))

    threads = [threading.Thread(target=replica) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        done = managers[0].wait(job.id, timeout=60)
    finally:
        for m in managers:
            m.close()
    assert done.status == "succeeded"
    assert sum(m.holder in done.recovery for m in managers) == 1


def test_a_running_replica_renews_its_leases(services):
    """A job queued behind the write lock stays this replica's: its lease is renewed while it
    waits, and another replica started meanwhile does not take it."""
    manager = JobManager(services, services.database("jobs"), lease_s=2)
    other = None
    try:
        with services.kbs.writing(KB):
            job = new_job()
            manager.submit(job, stage(services, job.id))
            time.sleep(2.5)  # longer than the lease
            holder, until, status = lease_of(services, job.id)
            assert (holder, status) == (manager.holder, "queued") and until > time.time()
            other = JobManager(services, services.database("jobs"), lease_s=2)
            time.sleep(0.8)
            assert lease_of(services, job.id)[0] == manager.holder
        assert manager.wait(job.id, timeout=60).status == "succeeded"
    finally:
        manager.close()
        if other is not None:
            other.close()


def test_which_holders_are_known_gone():
    assert holder_gone("") and not holder_gone(OTHER_HOST)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert holder_gone(f"{socket.gethostname()}:{child.stdout.strip()}:feed")  # exited process of this host
    assert not holder_gone(f"{socket.gethostname()}:{os.getppid()}:feed")  # a live one
    assert holder_gone(new_holder())  # this process, but no open JobManager by that name


def test_unfinished_statuses_are_those_a_lease_guards():
    assert not set(FINAL) & {"queued", "running", "interrupted"}
    assert Database  # the jobs table is migrated by JobManager (see left_by)
