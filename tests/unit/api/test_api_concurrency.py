"""Several simultaneous queries (plain and streamed) while an ingest job writes another knowledge
base and then the queried one, against a real uvicorn server and the on-disk Qdrant Edge store:
everything succeeds and the indexes stay consistent."""

from __future__ import annotations

import threading
import time

import httpx

from api.app import create_app
from tests.unit.api_helpers import ADMIN, make_services, parse_sse, running_server
from tests.unit.kb_fixtures import KB

PARAGRAPH = ("Section {i}. The Zephyr {i} kettle boils water in {i} minutes and its warranty lasts {i} years. "
             "Descale it every {i} weeks with citric acid; never immerse the base in water.\n\n")


def test_queries_and_an_ingest_job_at_the_same_time(tmp_path):
    services = make_services(tmp_path, backend="edge")
    app = create_app(services)
    files = [("files", (f"zephyr-{n}.md", ("# Zephyr %d\n\n" % n + PARAGRAPH.format(i=n) * 30).encode()))
             for n in range(12)]
    results: list[tuple[float, int]] = []
    lock = threading.Lock()

    with running_server(app) as base:
        with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as admin:
            assert admin.post("/v1/kbs", json={"name": "zephyr"}).status_code == 201
            upload = admin.post("/v1/kbs/zephyr/documents", files=files)
            assert upload.status_code == 202
            job_id = upload.json()["job_id"]

            def client_loop(n: int) -> None:
                with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as client:
                    for i in range(5):
                        kb = KB if (n + i) % 2 else "zephyr"
                        body = {"question": "How long is the warranty?", "kb": kb, "stream": i % 2 == 1}
                        r = client.post("/v1/query", json=body)
                        finished = time.time()
                        ok = r.status_code == 200 and (not body["stream"] or parse_sse(r.text)[-1][0] == "done")
                        with lock:
                            results.append((finished, 200 if ok else r.status_code))

            threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            deadline = time.monotonic() + 120
            while (job := admin.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "partial", "failed"):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)

    assert len(results) == 40 and all(status == 200 for _, status in results), results
    assert job["status"] == "succeeded" and job["progress"]["files_done"] == 12, job
    during = [t for t, _ in results if job["started_at"] <= t <= job["finished_at"]]
    assert during, "no query ran while the ingest job was writing"
    assert services.kbs.open("zephyr").check().ok  # (the handbook fixture has no catalog rows to check)
    services.close()
