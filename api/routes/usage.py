"""`GET /v1/kbs/{kb}/usage`: how a knowledge base is used over the last days (rag/usage.py): answers,
refusals and cited documents per day, the most cited documents, and those never cited (paged)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Query

from api.deps import Caller, State
from api.schemas import KB_PATTERN, UsageOut

router = APIRouter(prefix="/v1", tags=["knowledge bases"])
KbName = Annotated[str, PathParam(pattern=KB_PATTERN, description="Knowledge base name")]


@router.get("/kbs/{kb}/usage", response_model=UsageOut)
def kb_usage(kb: KbName, state: State, caller: Caller,
             days: int = Query(30, ge=1, le=366, description="Days back, today (UTC) included"),
             limit: int = Query(50, ge=1, le=500, description="Never-cited documents per page"),
             offset: int = Query(0, ge=0, le=10_000_000, description="Never-cited documents to skip")) -> Any:
    """Per day: the answers generated from the knowledge base (`/v1/query`, `/v1/chat`,
    `/v1/chat/completions`; retrieval-only calls are not counted), the refusals among them and the
    documents they cited; the 10 most cited documents; one page of the indexed documents no answer
    cited in the period."""
    caller.require_read(kb)
    state.services.catalog.require_kb(kb)
    report = state.usage.report(kb, days, limit=limit, offset=offset)
    body = asdict(report)
    return UsageOut(**body, questions=sum(d.questions for d in report.days),
                    refusals=sum(d.refusals for d in report.days))
