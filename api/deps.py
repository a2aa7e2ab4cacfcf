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
from rag.usage import UsageLog

log = logging.getLogger(__name__)

WARM_STAGES = ("embedder", "reranker", "llm")  # what `warm_up` loads, in order


@dataclass
class ApiState:
    services: Services
    settings: Settings
    pipeline: Pipeline
    auth: Authenticator
    conversations: ConversationStore
    jobs: JobManager
    metrics: Metrics
    usage: UsageLog | None = None  # per-knowledge-base answers, refusals and cited documents (rag/usage.py)
    warmup_error: str | None = None
    warmup_failed: str | None = None  # the stage whose loading failed ("embedder", "reranker", "llm")
    warmed_up: bool = False  # every stage below is loaded
    warm_up_started: bool = False  # a background warm-up runs (else /readyz warms up itself)
    loaded: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(WARM_STAGES, False))
    _warm_lock: threading.Lock = field(default_factory=threading.Lock)

    def _stage(self, name: str):
        """The stage to load: the embedder, the reranker (None when reranking is off), the LLM."""
        return {"embedder": lambda: self.services.embedder, "reranker": lambda: self.services.reranker,
                "llm": lambda: self.services.llm}[name]()

    def warm_up(self) -> None:
        """Load the embedding model, the reranker and the LLM (in this order; each once), so the first
        query does not pay for them and `/readyz` says ready only when all are loaded. A failure is
        kept for /readyz (naming the stage) instead of stopping the server; a later call (the next
        /readyz) tries the stages not loaded yet again, so an LLM endpoint that comes up after the
        API makes it ready. Returns at once while another thread is loading."""
        if self.warmed_up or not self._warm_lock.acquire(blocking=False):
            return
        try:
            for name in WARM_STAGES:
                if self.loaded[name]:
                    continue
                try:
                    stage = self._stage(name)
                    if stage is not None:
                        stage.warm_up()
                except RagError as exc:
                    self._failed(name, exc.message)
                    return
                except Exception as exc:  # surfaced by /readyz instead of killing the server
                    self._failed(name, f"{type(exc).__name__}: {exc}", exc)
                    return
                self.loaded[name] = True
            self.warmup_error = self.warmup_failed = None
            self.warmed_up = True
            log.info("models ready: embedder %s, reranker %s, llm %s", self.services.embedder.name,
                     self.services.reranker.name if self.services.reranker is not None else "off",
                     self.services.llm.name)
        finally:
            self._warm_lock.release()

    def _failed(self, stage: str, message: str, exc: BaseException | None = None) -> None:
        if (stage, message) != (self.warmup_failed, self.warmup_error):  # log a repeated failure once
            log.error("%s failed to load: %s", stage, message, exc_info=exc)
        self.warmup_error, self.warmup_failed = message, stage


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
