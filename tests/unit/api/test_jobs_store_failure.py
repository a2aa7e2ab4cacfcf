"""Upload jobs over a vector store that cannot write (issue 31): the job fails with the reason,
its files say failed, their documents stay pending (never reported indexed), and no job says
succeeded; a store whose flushes a second opener broke is reopened by the next write and the job
succeeds for real. Real Qdrant Edge shards, the hash embedder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from api.jobs import Job, JobManager, new_job_id
from api.uploads import staging_dir
from rag.factory import Services
from tests.unit.kb_fixtures import KB, build_services

FILES = {"hours.txt": b"The office opens at nine and closes at five on weekdays. " * 4,
         "parking.txt": b"Visitors park in the north lot and sign in at the front desk. " * 4}


@pytest.fixture
def services(tmp_path: Path):
    services = build_services(tmp_path, backend="edge", dim=64)
    yield services
    services.close()


def stage(services: Services, job_id: str) -> dict[str, Path]:
    folder = staging_dir(services.data_dir, job_id)
    folder.mkdir(parents=True)
    staged = {}
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
        staged[name] = folder / name
    return staged


def new_job(status: str = "queued") -> Job:
    return Job(new_job_id(), KB, "admin", status, time.time(),
               [{"filename": n, "size": len(b), "status": "queued"} for n, b in FILES.items()])


def collection_folder(services: Services) -> Path:
    return services.data_dir / "vectors-edge" / services.kbs.open(KB).collection


def assert_failed_and_pending(services: Services, job: Job) -> None:
    assert job.status == "failed" and "vector store" in (job.error or "")
    assert [f["status"] for f in job.files] == ["failed", "failed"]
    assert all("vector store" in f["reason"] for f in job.files)
    for name in FILES:
        record = services.catalog.find_doc_by_source(KB, name)
        assert record is None or record.state != "indexed", f"{name} reported indexed"


def test_a_job_whose_store_write_fails_is_failed_and_leaves_its_documents_pending(services, tmp_path):
    """Before: the engine's plain Exception made it "internal error while indexing" and the files
    stayed "queued" in the job record."""
    shutil.rmtree(collection_folder(services))  # the collection's files are gone under the open shard
    manager = JobManager(services, tmp_path / "jobs.sqlite")
    try:
        job = new_job()
        manager.submit(job, stage(services, job.id))
        done = manager.wait(job.id)
    finally:
        manager.close()
    assert_failed_and_pending(services, done)


def test_a_resumed_job_over_a_store_that_cannot_write_never_says_succeeded(services, tmp_path):
    db = tmp_path / "jobs.sqlite"
    manager = JobManager(services, db)
    job = new_job("running")  # the server stopped while this job ran
    stage(services, job.id)
    manager._save(job)
    manager.close()
    shutil.rmtree(collection_folder(services))
    restarted = JobManager(services, db)  # the restart resumes it
    try:
        done = restarted.wait(job.id)
    finally:
        restarted.close()
    assert "server stopped" in (done.recovery or "")
    assert_failed_and_pending(services, done)


def test_a_job_after_a_second_opener_broke_the_flushes_succeeds_for_real(services, tmp_path):
    from qdrant_edge import EdgeShard

    folder = collection_folder(services)
    with pytest.raises(Exception, match="WouldBlock"):
        EdgeShard.load(str(folder))  # removes the live shard's tracker journals, then fails
    manager = JobManager(services, tmp_path / "jobs.sqlite")
    try:
        job = new_job()
        manager.submit(job, stage(services, job.id))
        done = manager.wait(job.id)
    finally:
        manager.close()
    assert done.status == "succeeded", done
    kb = services.kbs.open(KB)
    assert kb.check().ok
    services.store.close()  # what a restart sees: everything was flushed
    assert kb.check().ok and kb.count() == len(services.catalog.all_chunk_ids(KB))
