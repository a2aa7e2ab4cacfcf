"""Probes, metrics and the chat page: `/healthz` (liveness), `/readyz` (models loaded, store
reachable; 503 until then), `/metrics` (Prometheus text), `/` (a small chat page).

The probes need no API key, but without one (when authentication is on) they answer their status
only: models and endpoints need a valid key, the knowledge-base count the admin key. `/metrics`
needs a key unless `RAG_PUBLIC_METRICS=true`. Nothing here shows a secret."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from api.deps import MaybeCaller, State
from api.errors import Unauthorized
from rag.db import DB_ERRORS
from rag.errors import RagError

router = APIRouter(tags=["system"])
log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _store_check(state: Any) -> dict[str, Any]:
    services = state.services
    backend = services.settings.resolved_vector_backend
    try:
        records = services.kbs.list()
        for record in records[:1]:
            services.store.collection_exists(record.collection)
        return {"ok": True, "backend": backend, "knowledge_bases": len(records)}
    except (RagError, *DB_ERRORS, OSError) as exc:
        return {"ok": False, "backend": backend, "error": getattr(exc, "message", str(exc))}
    except Exception as exc:  # a probe reports any client failure (connection refused, timeout, ...) as not ready
        log.warning("readiness: store check failed: %s", exc)
        return {"ok": False, "backend": backend, "error": f"{type(exc).__name__}: {exc}"}


@router.get("/readyz", responses={503: {"description": "Not ready: models loading or store unreachable"}})
def readyz(state: State, caller: MaybeCaller) -> JSONResponse:
    """Readiness: the embedding model, the reranker (when on) and the LLM are loaded and the store
    answers; with an API key also which models and the LLM endpoint, and with the admin key the
    knowledge-base count."""
    services, settings = state.services, state.settings
    if not state.warm_up_started or state.warmup_error:  # no background warm-up, or try a failed stage again
        state.warm_up()
    store = _store_check(state)
    resolution = services.__dict__.get("embedder_resolution")
    embedder = {"ok": state.loaded["embedder"], "loaded": state.loaded["embedder"], "configured": settings.embed_model,
                "model": resolution.embedder.name if resolution else None,
                "resolution": resolution.reason if resolution else None}
    reranker = services.__dict__.get("reranker")
    rerank = {"enabled": reranker is not None, "model": reranker.name if reranker is not None else None,
              "configured": settings.rerank_model, "loaded": state.loaded["reranker"]}
    llm: dict[str, Any] = {"endpoint": settings.llm_base_url or "embedded (llama.cpp)", "model": settings.llm_model,
                           "loaded": state.loaded["llm"]}
    if "llm" in services.__dict__:
        llm["info"] = services.llm.info()
    ready = store["ok"] and state.warmed_up
    status = 200 if ready else 503
    if caller is None:
        return JSONResponse({"status": "ready" if ready else "not_ready"}, status_code=status)
    if not caller.admin:  # how many knowledge bases there are is the admin's to know
        store.pop("knowledge_bases", None)
    checks = {"store": store, "embedder": embedder,
              "reranker": {"ok": state.loaded["reranker"], "enabled": reranker is not None},
              "llm": {"ok": state.loaded["llm"]}}
    if state.warmup_error:
        checks[state.warmup_failed or "embedder"]["error"] = state.warmup_error
    body = {"status": "ready" if ready else "not_ready", "checks": checks,
            "reranking": rerank, "llm": llm, "auth": "disabled" if state.auth.disabled else "enabled",
            "default_kb": settings.default_kb, "jobs_active": state.jobs.active()}
    return JSONResponse(body, status_code=status)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: State, caller: MaybeCaller) -> PlainTextResponse:
    """Prometheus metrics (text format 0.0.4). Needs an API key unless RAG_PUBLIC_METRICS=true."""
    if caller is None and not state.settings.public_metrics:
        raise Unauthorized("/metrics needs an API key (`Authorization: Bearer <key>`), or set RAG_PUBLIC_METRICS=true")
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/", include_in_schema=False)
def chat_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    """The pages link /static/favicon.svg; browsers and tools that ask for /favicon.ico get it too."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")
