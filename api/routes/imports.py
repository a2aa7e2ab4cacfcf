"""`POST /v1/kbs/{kb}/documents/url`: import one page or file by URL (api/url_import.py). The URL is
checked before the 202 (a 422 naming `url`: not http(s), credentials, a host that does not resolve, a
loopback or private address); the job then fetches it and ingests it as an upload, so a fetch failure
(unreachable, an HTTP error, too large, a type an upload may not have) is its file's error."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Response

from api.deps import Caller, State
from api.jobs import Job, new_job_id
from api.schemas import KB_PATTERN, JobAccepted, UrlImport
from api.url_import import check_url, file_name
from rag.types import check_tags

router = APIRouter(prefix="/v1", tags=["knowledge bases"])
KbName = Annotated[str, PathParam(pattern=KB_PATTERN, description="Knowledge base name")]


@router.post("/kbs/{kb}/documents/url", response_model=JobAccepted, status_code=202,
             responses={422: {"description": "A URL the server may not fetch (`url`) or a bad tag (`tags`)"}})
def import_url(kb: KbName, body: UrlImport, state: State, caller: Caller, response: Response) -> Any:
    """Fetch one page or file by URL and ingest it in a background job like an upload (202; poll
    `status_url`): the upload's size limit (RAG_MAX_UPLOAD_MB) and types, HTML saved as `.html`, no
    crawling, redirects only to http(s). Loopback and private addresses are refused unless
    RAG_URL_IMPORT_ALLOW_PRIVATE=true. The same name again replaces that document."""
    caller.require_write(kb)
    state.services.catalog.require_kb(kb)
    url = check_url(body.url, state.settings.url_import_allow_private)
    tags = check_tags(body.tags, "tags")
    entry = {"filename": file_name(url, None), "size": 0, "status": "queued", "url": url}
    job = Job(new_job_id(), kb, caller.key_id, "queued", time.time(), [entry], tags=tags, kind="url")
    state.jobs.submit(job, {})
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobAccepted(job_id=job.id, kb=kb, status="queued", status_url=f"/v1/jobs/{job.id}",
                       files=[{"filename": entry["filename"], "url": url}])
