"""Bounded load on the REST API over loopback: N concurrent clients send `POST /v1/query`
(retrieval only: `generate: false`) for a fixed duration, first without reranking, then with it.
Reports throughput, latency p50/p95/p99, the error count (must be 0) and the server-side stage
times of the answered queries.

    python benchmarks/api_load.py [--clients 1 4 8 16] [--duration 60] [--embed-model e5]
        [--batching off,on] [--dataset covidqa] [--limit-docs 15] [--rerank-model PATH|minilm-random|none]
        [--url http://host:8000 --key KEY --kb NAME] [--out result.json]

`--batching off,on` serves the same knowledge base once with micro-batching off and once on
(`RAG_BATCH_QUERIES`), in this order, and loads each with every client count, so the ratio of
the two paths comes from one run on one machine.

Without --url it builds a knowledge base from a shipped evaluation corpus in a temporary folder
and serves it with uvicorn on 127.0.0.1 in a separate process (as `rag serve` does). No reranker is bundled: `minilm-random` (the default)
builds a cross-encoder from the bundled MiniLM weights with an untrained head, which scores
nonsense but costs exactly what a MiniLM-sized reranker costs; pass a real bge-reranker path to
measure that instead."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("embed", "dense", "bm25", "fusion", "fetch", "rerank", "total")


def random_head_reranker(folder: Path) -> Path:
    """A BertForSequenceClassification (1 label) from the bundled all-MiniLM-L6-v2 weights."""
    from rag.testing import minilm_cross_encoder

    return minilm_cross_encoder(folder)


def build_kb(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, str], list[str], dict[str, Any]]:
    """A knowledge base from the dataset under `tmp/data`; returns (the server's RAG_* environment,
    the questions, facts for the report). The services are closed again: the server opens the store."""
    from eval.datasets import load_dataset, write_corpus_as_files
    from ingest.service import build_ingestor
    from rag.factory import build_services
    from rag.settings import load_settings

    dataset = load_dataset(args.dataset)
    doc_ids = sorted(dataset.corpus)[: args.limit_docs]
    write_corpus_as_files(dataset, tmp / "files", doc_ids=doc_ids)
    questions = [q for qid, q in sorted(dataset.queries.items()) if set(dataset.qrels.get(qid, {})) & set(doc_ids)]
    rerank = args.rerank_model
    if rerank == "minilm-random":
        rerank = str(random_head_reranker(tmp / "minilm-reranker"))
    env = {"RAG_DATA_DIR": str(tmp / "data"), "RAG_EMBED_MODEL": args.embed_model, "RAG_RERANK_MODEL": rerank,
           "RAG_RERANK_CANDIDATES": str(args.rerank_candidates), "RAG_RERANK_MIN_SCORE": "0",
           "RAG_REFUSE_MIN_SCORE": "0", "RAG_API_ADMIN_KEY": "bench-" + secrets.token_hex(8),
           "RAG_DEFAULT_KB": args.kb, "RAG_AUTH_DISABLED": "false"}
    services = build_services(load_settings(data_dir=tmp / "data", embed_model=args.embed_model))
    try:
        print(f"embedder: {services.embedder_resolution.reason}", file=sys.stderr)
        started = time.perf_counter()
        report = build_ingestor(services, args.kb).ingest_folder(tmp / "files")
        seconds = time.perf_counter() - started
        facts = {"embed_model": services.embedder.name, "dataset": args.dataset, "documents": len(doc_ids),
                 "chunks": report.chunks_added, "index_seconds": round(seconds, 1)}
    finally:
        services.close()
    print(f"indexed {facts}", file=sys.stderr)
    return env, questions or ["What is the incubation period?"], facts


def serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`uvicorn api.app:create_app --factory` in its own process (as `rag serve` runs it), so the
    load generator's threads do not share the server's interpreter lock."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(command, env={**os.environ, **env}, cwd=str(ROOT))
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(base: str, proc: subprocess.Popen | None, key: str = "", timeout: float = 600) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            ready = httpx.get(f"{base}/readyz", headers={"X-API-Key": key} if key else {}, timeout=30).json()
            if ready.get("status") == "ready" or ready["checks"]["embedder"].get("error"):
                return ready
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the server did not become ready")


def run_phase(base: str, key: str, kb: str, questions: list[str], clients: int, duration: float,
              rerank: bool) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    stage_times: dict[str, list[float]] = {s: [] for s in STAGES}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client(n: int) -> None:
        i = n
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=300) as http:
            while time.monotonic() < deadline:
                body = {"question": questions[i % len(questions)], "kb": kb, "generate": False, "rerank": rerank}
                i += clients
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/query", json=body)
                    ok, detail = r.status_code == 200, f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        timings = r.json().get("timings", {})
                        for stage in STAGES:
                            if stage in timings:
                                stage_times[stage].append(timings[stage])
                    else:
                        errors.append(detail)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"rerank": rerank, "clients": clients, "duration_s": round(wall, 1), "requests": len(latencies),
            "errors": len(errors), "error_samples": errors[:3], "throughput_rps": round(len(latencies) / wall, 2),
            "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
                           "p99": round(float(np.percentile(ms, 99)), 1), "mean": round(float(ms.mean()), 1)},
            "server_stage_ms_mean": {s: round(statistics.fmean(v) * 1000, 2) for s, v in stage_times.items() if v}}


def load_server(base: str, key: str, ready: dict[str, Any], args: argparse.Namespace,
                questions: list[str]) -> dict[str, Any]:
    """Every phase at every client count against one server."""
    out: dict[str, Any] = {"reranker": ready.get("reranking")}
    for phase in [p.strip() for p in args.phases.split(",") if p.strip()]:
        rerank = phase == "rerank"
        if rerank and not (ready.get("reranking") or {}).get("enabled"):
            out[phase] = {"skipped": "no reranker on the server"}
            continue
        out[phase] = {}
        for clients in args.clients:
            run_phase(base, key, args.kb, questions, clients, min(5.0, args.duration), rerank)  # warm-up
            out[phase][str(clients)] = run_phase(base, key, args.kb, questions, clients, args.duration, rerank)
            print(f"{phase} x{clients}: {json.dumps(out[phase][str(clients)])}", file=sys.stderr)
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| batching | phase | clients | req/s | p50 ms | p95 ms | p99 ms | errors | server embed ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, run in result["runs"].items():
        for phase, rows in run.items():
            if phase == "reranker" or "skipped" in rows:
                continue
            for clients, r in rows.items():
                lat = r["latency_ms"]
                lines.append(f"| {mode} | {phase} | {clients} | {r['throughput_rps']} | {lat['p50']} | {lat['p95']} | "
                             f"{lat['p99']} | {r['errors']} | {r['server_stage_ms_mean'].get('embed', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds per phase and client count.")
    parser.add_argument("--embed-model", default="e5", help="RAG_EMBED_MODEL value (e5, minilm, hash, a path).")
    parser.add_argument("--batching", default="on", help="Comma list of off, on: one server each, in this order.")
    parser.add_argument("--dataset", default="covidqa")
    parser.add_argument("--limit-docs", type=int, default=15)
    parser.add_argument("--kb", default="bench")
    parser.add_argument("--rerank-model", default="minilm-random")
    parser.add_argument("--rerank-candidates", type=int, default=20)
    parser.add_argument("--phases", default="retrieval,rerank", help="Comma list of retrieval, rerank.")
    parser.add_argument("--url", help="Load an already running server instead (needs --key and --kb).")
    parser.add_argument("--key", help="API key for --url.")
    parser.add_argument("--question", action="append", help="Questions for --url (repeatable).")
    parser.add_argument("--out", type=Path, help="Also write the result JSON here.")
    args = parser.parse_args()
    modes = [m.strip() for m in args.batching.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        parser.error("--batching takes a comma list of on, off")

    result: dict[str, Any] = {"clients": args.clients, "duration_per_phase_s": args.duration, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            base, key, questions = args.url.rstrip("/"), args.key or "", args.question or ["What is this about?"]
            result["runs"]["server"] = load_server(base, key, wait_ready(base, None, key), args, questions)
        else:
            env, questions, facts = build_kb(args, Path(tmp))
            result.update(facts)
            key = env["RAG_API_ADMIN_KEY"]
            for mode in modes:
                proc, base = serve({**env, "RAG_BATCH_QUERIES": "true" if mode == "on" else "false"})
                try:
                    result["runs"][mode] = load_server(base, key, wait_ready(base, proc, key), args, questions)
                finally:
                    proc.terminate()
                    proc.wait(30)
    print(json.dumps(result, indent=2))
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
