"""Dependencies shared by the routers. Everything lives on one `ApiState` built by the app
factory (no module-level singletons); tests override `get_pipeline` (or any other) through
`app.dependency_overrides`."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Authenticator, Principal
from api.conversations import ConversationStore
from api.jobs import JobManager
from api.metrics import Metrics
from rag.errors import RagError
from rag.factory import Services
from rag.pipeline import Pipeline
from rag.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ApiState:
    services: Services
    settings: Settings
    pipeline: Pipeline
    auth: Authenticator
    conversations: ConversationStore
    jobs: JobManager
    metrics: Metrics
    warmup_error: str | None = None
    warmed_up: bool = False
    warm_up_started: bool = False  # a background warm-up runs (else /readyz warms up itself)
    _warm_lock: threading.Lock = field(default_factory=threading.Lock)

    def warm_up(self) -> None:
        """Load the embedding model and resolve the reranker (once), so the first query does not pay
        for it; a failure is kept for /readyz instead of stopping the server."""
        with self._warm_lock:
            if self.warmed_up or self.warmup_error:
                return
            try:
                self.services.embedder.encode_queries(["warm-up"])
                self.services.reranker  # noqa: B018  (resolves the model; it loads on first use)
                self.warmed_up = True
                log.info("models ready: embedder %s", self.services.embedder.name)
            except RagError as exc:
                self.warmup_error = exc.message
                log.error("embedding model failed to load: %s", exc.message)
            except Exception as exc:  # surfaced by /readyz instead of killing the server
                self.warmup_error = f"{type(exc).__name__}: {exc}"
                log.exception("embedding model failed to load")


def get_state(request: Request) -> ApiState:
    return request.app.state.api


State = Annotated[ApiState, Depends(get_state)]


def get_pipeline(state: State) -> Pipeline:
    return state.pipeline


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`")


def get_principal(state: State, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  header_key: Annotated[str | None, Depends(_header)]) -> Principal:
    return state.auth.authenticate(bearer.credentials if bearer else None, header_key)


Caller = Annotated[Principal, Depends(get_principal)]


def get_optional_principal(state: State,
                           bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                           header_key: Annotated[str | None, Depends(_header)]) -> Principal | None:
    """The caller when credentials were sent (or auth is off), None without any: probes send none."""
    if not state.auth.disabled and not ((bearer.credentials if bearer else "") or header_key or "").strip():
        return None
    return state.auth.authenticate(bearer.credentials if bearer else None, header_key)


MaybeCaller = Annotated[Principal | None, Depends(get_optional_principal)]


def get_admin(caller: Caller) -> Principal:
    caller.require_admin()
    return caller


Admin = Annotated[Principal, Depends(get_admin)]
