"""The FastAPI application factory.

`create_app()` reads settings from the environment (RAG_*), builds the services lazily, and
warms the embedding model (and resolves the reranker) in a background thread at startup;
`/readyz` answers 503 until that is done. Tests pass their own `Services` (fake embedder,
scripted LLM) and override `api.deps.get_pipeline` when they need to.

Authentication: every `/v1` route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`).
The admin key (RAG_API_ADMIN_KEY) may do everything and manage keys. Without an admin key the
server still starts: keys made with `rag keys create` work, nothing else does. Only
RAG_AUTH_DISABLED=true turns authentication off, with a warning at every start.

Request limits (middleware, outside the routes): a body over RAG_MAX_REQUEST_MB (uploads) or 8 MB
(anything else) is refused with 413 while it streams; a body that has not arrived within
RAG_REQUEST_BODY_TIMEOUT seconds gets 408 and its connection closed; an API key may have
RAG_MAX_CONCURRENT_UPLOADS_PER_KEY uploads in progress (429 past that). The pages and /static/
carry a Content-Security-Policy without inline script or style."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from api.auth import ApiKeyStore, Authenticator
from api.conversations import ConversationStore
from api.deps import ApiState
from api.errors import install_error_handlers
from api.jobs import JobManager
from api.metrics import Metrics, MetricsMiddleware
from api.middleware import BodyTimeoutMiddleware, PageSecurityMiddleware
from api.routes import (chunks, console, imports, kb_settings, kbs, keys, model_serving, openai_compat, query, system,
                        usage)
from api.uploads import BodyLimitMiddleware, UploadSlotsMiddleware, body_limit
from rag.factory import Services, build_services
from rag.settings import Settings, load_settings
from rag.usage import UsageLog

log = logging.getLogger(__name__)
API_VERSION = "1.0.0"


def _announce_auth(settings: Settings, key_count: int) -> None:
    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS DISABLED (RAG_AUTH_DISABLED=true): anyone who can reach this server can "
                    "query, upload, delete knowledge bases and manage API keys. Use it only on a trusted machine.")
    elif not settings.api_admin_key:
        log.warning("no admin key (RAG_API_ADMIN_KEY) is set: only the %d API key(s) created with `rag keys create` "
                    "can use the API, and no key can be created over HTTP", key_count)


def create_app(services: Services | None = None, settings: Settings | None = None, *,
               warm_up: bool = True) -> FastAPI:
    """The app. `services` defaults to `build_services(settings or load_settings())` (closed at
    shutdown); services given by the caller stay the caller's to close. `warm_up=False` skips the
    background model loading at startup; the first `/readyz` then loads the models itself."""
    owns_services = services is None
    if services is None:
        services = build_services(settings or load_settings())
    settings = services.settings
    data_dir = services.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    key_store = ApiKeyStore(services.database("api_keys"))
    jobs = JobManager(services, services.database("jobs"), on_finish=lambda job: metrics.jobs.inc(job.status))
    metrics.jobs_active.read = jobs.active
    state = ApiState(services=services, settings=settings, pipeline=services.pipeline,
                     auth=Authenticator(key_store, Settings.secret(settings.api_admin_key), settings.auth_disabled),
                     conversations=ConversationStore(services.database("conversations")), jobs=jobs, metrics=metrics,
                     usage=UsageLog(services.catalog.db))
    _announce_auth(settings, key_store.count())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            state.warm_up_started = True
            threading.Thread(target=state.warm_up, name="warm-up", daemon=True).start()
        yield
        jobs.close(wait=True)
        state.conversations.close()
        key_store.close()
        if owns_services:
            services.close()

    app = FastAPI(title="RAG service", version=API_VERSION, lifespan=lifespan,
                  description="Question answering over your documents with hybrid retrieval and verified "
                              "citations. Authenticate with `Authorization: Bearer <API key>` or `X-API-Key`.")
    app.state.api = state
    install_error_handlers(app)
    for router in (query.router, openai_compat.router, model_serving.router, kbs.router, chunks.router, kb_settings.router,
                   imports.router, usage.router, keys.router, console.router, system.router, console.page_router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=console.STATIC), name="static")
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit(settings.max_request_mb))
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.request_body_timeout)
    app.add_middleware(UploadSlotsMiddleware, auth=state.auth, limit=settings.max_concurrent_uploads_per_key)
    app.add_middleware(PageSecurityMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                           expose_headers=["X-Conversation-Id", "Location", "X-Total-Count"], allow_credentials=False)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
