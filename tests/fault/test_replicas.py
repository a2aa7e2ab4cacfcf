"""API replicas sharing one real PostgreSQL (catalog, advisory locks, leased jobs, pgvector): three
`rag serve` processes on different ports, as on three hosts but for the uploads folder they share.
Ingest through one and query through another; two replicas uploading to one knowledge base take
turns on its lock; a replica killed with kill -9 in the middle of a job leaves it to another, which
resumes it once the lease expires, with `check` clean and no document lost; a replica embedding
through another's `/v1/embeddings`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from benchmarks.replicas import Replica, chat_endpoint, replica_env, start_replicas, upload, wait_job

pytestmark = pytest.mark.fault
KB = "shared"
LEASE_S = 3


def write_docs(folder: Path, prefix: str, n: int, size: int = 1) -> list[Path]:
    """`n` small documents, each about one made-up product (so a query finds exactly one)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}-{i:03d}.md"
        body = (f"The {prefix} model {i} kettle has a warranty of {i + 2} years and boils water in {i + 30} "
                f"seconds. Its lid hinge is covered. ") * (8 * size)
        path.write_text(f"# {prefix} model {i}\n\n{body}\n", encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture
def cluster(tmp_path, pg_url):
    """Three replicas over one PostgreSQL; the third takes its embeddings from the first's
    `/v1/embeddings` (the hash embedder: its name is what the knowledge base records)."""
    key = "replica-admin-key"
    with chat_endpoint() as llm_url:
        common = {"RAG_EMBED_MODEL": "hash", "RAG_CHUNK_SIZE": "200", "RAG_CHUNK_OVERLAP": "20",
                  "RAG_JOB_LEASE_S": str(LEASE_S), "RAG_EMBED_BATCH_SIZE": "4"}
        envs = [replica_env(tmp_path / "data", pg_url, llm_url, key, **common) for _ in range(2)]
        first = Replica(envs[0], log_dir=tmp_path)
        first.wait_ready()
        remote = {**common, "RAG_EMBED_BASE_URL": f"{first.url}/v1", "RAG_EMBED_MODEL": "hash-bow-256",
                  "RAG_EMBED_API": "rag", "RAG_EMBED_API_KEY": key}
        others = start_replicas([envs[1], replica_env(tmp_path / "data", pg_url, llm_url, key, **remote)],
                                log_dir=tmp_path)
        replicas = [first, *others]
        try:
            r = httpx.post(f"{first.url}/v1/kbs", json={"name": KB}, headers=first.headers, timeout=60)
            assert r.status_code == 201, r.text
            yield replicas
        finally:
            for replica in replicas:
                replica.stop()


def query(replica: Replica, question: str) -> dict:
    r = httpx.post(f"{replica.url}/v1/query", json={"kb": KB, "question": question}, headers=replica.headers,
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def check(replica: Replica) -> dict:
    r = httpx.get(f"{replica.url}/v1/kbs/{KB}/check", headers=replica.headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def documents(replica: Replica) -> dict[str, str]:
    r = httpx.get(f"{replica.url}/v1/kbs/{KB}/documents", headers=replica.headers, timeout=60)
    return {d["source"]: d["state"] for d in r.json()}


def test_ingest_through_one_replica_query_through_the_others(cluster, tmp_path):
    a, b, c = cluster
    job = wait_job(b, upload(a, KB, write_docs(tmp_path / "docs", "zephyr", 5)))  # job seen from another replica
    assert job["status"] == "succeeded", job
    for replica in (b, c):  # c embeds the question through a's /v1/embeddings
        answer = query(replica, "How long is the warranty of the zephyr model 3 kettle?")
        assert answer["citations"][0]["document"] == "zephyr-003.md", answer
    key = httpx.post(f"{a.url}/v1/keys", json={"name": "reader", "read": [KB]}, headers=a.headers).json()["key"]
    assert httpx.get(f"{c.url}/v1/kbs/{KB}", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    chat = httpx.post(f"{b.url}/v1/chat", json={"kb": KB, "message": "zephyr model 1 warranty?"}, headers=a.headers,
                      timeout=60).json()
    history = httpx.get(f"{c.url}/v1/conversations/{chat['conversation_id']}", headers=a.headers).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    job = wait_job(a, upload(c, KB, write_docs(tmp_path / "more", "aurora", 2)))  # ingest embedding remotely
    assert job["status"] == "succeeded", job
    assert query(b, "aurora model 1 kettle warranty")["citations"][0]["document"] == "aurora-001.md"
    assert check(c)["ok"]


def test_two_replicas_uploading_to_one_knowledge_base_take_turns(cluster, tmp_path):
    a, b, _ = cluster
    first = upload(a, KB, write_docs(tmp_path / "one", "alpha", 12, size=3))
    second = upload(b, KB, write_docs(tmp_path / "two", "beta", 12, size=3))
    jobs = sorted((wait_job(a, first), wait_job(a, second)), key=lambda j: j["started_at"])
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], jobs
    # a job starts once it holds the lock; every document of the first was indexed before the second began
    r = httpx.get(f"{b.url}/v1/kbs/{KB}/documents", headers=b.headers, timeout=60).json()
    indexed_at = {d["source"]: d["ingested_at"] for d in r}
    earlier = [t for name, t in indexed_at.items() if name.startswith(jobs[0]["files"][0]["filename"][:5])]
    later = [t for name, t in indexed_at.items() if name.startswith(jobs[1]["files"][0]["filename"][:5])]
    assert len(earlier) == len(later) == 12
    assert max(earlier) <= jobs[1]["started_at"] <= min(later), "the two jobs wrote the knowledge base at once"
    assert set(documents(b).values()) == {"indexed"}
    assert check(b)["ok"]


def test_a_replica_killed_mid_job_leaves_it_to_another(cluster, tmp_path):
    a, b, c = cluster
    docs = write_docs(tmp_path / "docs", "gamma", 20, size=8)
    job_id = upload(b, KB, docs)  # not a: c takes its embeddings from a
    deadline = time.monotonic() + 120
    while True:
        job = httpx.get(f"{a.url}/v1/jobs/{job_id}", headers=a.headers).json()
        if job["status"] == "running" and job["progress"].get("chunks_done", 0) > 0:
            break
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.02)
    b.kill()
    killed_at = time.monotonic()
    done = wait_job(a, job_id, timeout=180)
    assert done["status"] == "succeeded", done
    assert "lease expired" in (done["recovery"] or ""), done
    assert time.monotonic() - killed_at >= 0.5  # resumed by another replica, not finished by the dead one
    assert documents(c) == {d.name: "indexed" for d in docs}
    report = check(c)
    assert report["ok"], report
    assert query(a, "gamma model 17 kettle warranty")["citations"][0]["document"] == "gamma-017.md"
