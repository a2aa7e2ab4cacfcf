"""Knowledge bases, their documents, uploads and ingest jobs.

Uploads are checked (type -> 415, size -> 413, names -> 422) and staged before the 202 answer; the
ingest job then runs in the background with the same code and incremental rules as `rag ingest`."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path as PathParam, Query, Response, UploadFile

from api.deps import ApiState, Caller, State
from api.errors import Conflict
from api.jobs import Job, new_job_id
from api.schemas import (KB_PATTERN, BulkItem, BulkResult, CheckOut, DocumentDeleted, DocumentOut, DocumentPatch,
                         DocumentsBulk, JobAccepted, JobOut, KbCreate, KbOut, RepairOut)
from api.uploads import (MAX_FILES_PER_UPLOAD, MIB, check_type, kb_upload_dir, remove_tree,
                         sanitize_filename, save_stream, staging_dir, too_large)
from rag import doc_edits
from rag.catalog import DocRecord, KbRecord, check_new_kb_name
from rag.chunk_edits import KEEP, check_mode
from rag.doc_edits import DocEdit
from rag.doc_query import MAX_PAGE, DocQuery
from rag.errors import Busy, InvalidRequest, NotFound
from rag.kb import CheckReport
from rag.repair import repair
from rag.types import check_tags, parse_tags

router = APIRouter(prefix="/v1", tags=["knowledge bases"])
TOTAL_HEADER = "X-Total-Count"
KbName = Annotated[str, PathParam(pattern=KB_PATTERN, description="Knowledge base name")]


def _kb_out(state: ApiState, record: KbRecord) -> KbOut:
    stats = state.services.catalog.kb_stats(record.name)
    meta = record.meta if isinstance(record.meta, dict) else {}
    return KbOut(name=record.name, embed_model=record.embed_model, dim=record.dim, created_at=record.created_at,
                 description=str(meta.get("description", "")),
                 reembed_needed=state.services.kbs.model_check(record, dim_always=False).differs, **stats)


@contextmanager
def _busy_is_conflict():
    """A knowledge base's write lock taken without waiting (by the code inside): 409 while an
    ingest job writes it."""
    try:
        yield
    except Busy as exc:
        raise Conflict(f"{exc.message}; retry when its ingest job has finished", field="kb") from exc


@router.get("/kbs", response_model=list[KbOut])
def list_kbs(state: State, caller: Caller) -> Any:
    """The knowledge bases this key may read, with document and chunk counts."""
    return [_kb_out(state, r) for r in state.services.kbs.list() if caller.can_read(r.name)]


@router.post("/kbs", response_model=KbOut, status_code=201)
def create_kb(body: KbCreate, state: State, caller: Caller) -> Any:
    """Create an empty knowledge base with the configured embedding model (409 if it exists)."""
    caller.require_write(body.name)
    kbs = state.services.kbs
    if kbs.exists(body.name):
        raise Conflict(f"knowledge base {body.name!r} exists already", field="name")
    try:
        check_new_kb_name(body.name)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, field="name") from None
    meta = {"description": body.description} if body.description else None
    # created under its write lock, like an ingest creates it
    with _busy_is_conflict(), kbs.writing(body.name):
        if kbs.exists(body.name):
            raise Conflict(f"knowledge base {body.name!r} exists already", field="name")
        return _kb_out(state, kbs.open_or_create(body.name, meta).record)


@router.get("/kbs/{kb}", response_model=KbOut)
def get_kb(kb: KbName, state: State, caller: Caller) -> Any:
    caller.require_read(kb)
    return _kb_out(state, state.services.catalog.require_kb(kb))


@router.delete("/kbs/{kb}", status_code=204)
def delete_kb(kb: KbName, state: State, caller: Caller) -> Response:
    """Drop the knowledge base: its vectors, lexical index, catalog rows and uploaded files."""
    caller.require_write(kb)
    kbs = state.services.kbs
    kbs.require(kb)  # also a knowledge base whose drop was interrupted: this one finishes it
    with _busy_is_conflict(), kbs.writing(kb):  # the uploaded files go under the same write lock
        kbs.drop(kb)
        remove_tree(kb_upload_dir(state.services.data_dir, kb))  # kept failed files (.retry) included
        if state.usage is not None:
            state.usage.forget(kb)
    return Response(status_code=204)


def _check_out(report: CheckReport) -> CheckOut:
    return CheckOut(ok=report.ok, **asdict(report))


@router.get("/kbs/{kb}/check", response_model=CheckOut)
def check_kb(kb: KbName, state: State, caller: Caller) -> Any:
    """What `rag check` says, from the server that holds the store (admin or a key that may write
    the knowledge base): the chunk ids the catalog, the vectors and BM25 disagree on, and orphan
    collections and interrupted drops of the knowledge bases this key may write."""
    caller.require_write(kb)
    return _check_out(state.services.kbs.check(kb, allowed=caller.can_write))


@router.post("/kbs/{kb}/repair", response_model=RepairOut)
def repair_kb(kb: KbName, state: State, caller: Caller) -> Any:
    """`rag check --repair` (admin or a key that may write the knowledge base): under the write
    lock (409 while an ingest job writes it), bring the catalog, the vectors and BM25 back to
    agreement, remove orphans and finish interrupted drops (of the knowledge bases this key may
    write); what was done per category and the check run afterwards."""
    caller.require_write(kb)
    kbs = state.services.kbs
    kbs.require(kb)
    with _busy_is_conflict():
        done = repair(kbs, kb, allowed=caller.can_write)
    body = asdict(done)
    body["after"] = _check_out(done.after)
    body["recovery"] = done.recovery.message if done.recovery else None
    return RepairOut(changed=done.changed, **body)


def document_out(state: ApiState, kb: str, doc: DocRecord) -> DocumentOut:
    upload_dir = str(kb_upload_dir(state.services.data_dir, kb).resolve())
    return DocumentOut(doc_id=doc.doc_id, source=doc.source, title=doc.title, format=doc.format, size=doc.size,
                       mtime=doc.mtime, state=doc.state, chunks=len(doc.chunk_ids), tags=doc.tags,
                       ingested_at=doc.ingested_at, uploaded=doc.origin == upload_dir)


@router.get("/kbs/{kb}/documents", response_model=list[DocumentOut],
            responses={200: {"headers": {TOTAL_HEADER: {"description": "How many documents match (all pages)",
                                                        "schema": {"type": "integer"}}}}})
def list_documents(kb: KbName, state: State, caller: Caller, response: Response,
                   limit: int = Query(1000, ge=1, le=MAX_PAGE, description="Documents per page"),
                   offset: int = Query(0, ge=0, le=10_000_000, description="Documents to skip"),
                   q: str = Query("", max_length=200, description="A substring of the source or title (any case)"),
                   doc_state: Literal["indexed", "pending", "deleting"] | None = Query(None, alias="state"),
                   tag: list[str] = Query([], description="key=value (or key:value); repeat: all must match")) -> Any:
    """One page of the knowledge base's documents by source name, filtered in the catalog (SQL) by
    `q`, `state` and `tag`; the `X-Total-Count` header says how many match."""
    caller.require_read(kb)
    state.services.catalog.require_kb(kb)
    query = DocQuery(q=q, state=doc_state, tags=tuple(DocQuery.parse_tag(t) for t in tag), limit=limit, offset=offset)
    page = state.services.catalog.page_docs(kb, query)
    response.headers[TOTAL_HEADER] = str(page.total)
    return [document_out(state, kb, d) for d in page.docs]


@router.patch("/kbs/{kb}/documents/{doc_id}", response_model=DocumentOut,
              responses={409: {"description": "An ingest job is writing the knowledge base"}})
def edit_document(kb: KbName, doc_id: str, body: DocumentPatch, state: State, caller: Caller) -> Any:
    """Edit a document's tags (replace all with `tags`, set `add_tags`, remove `remove_tags` keys)
    and title, under the knowledge base's write lock (409 while an ingest job writes it). Tag
    filters of queries see the new tags at once."""
    caller.require_write(kb)
    edit = DocEdit(tags=body.tags, add_tags=body.add_tags, remove_tags=body.remove_tags, title=body.title)
    state.services.catalog.require_kb(kb)
    with _busy_is_conflict(), state.services.kbs.writing(kb):
        return document_out(state, kb, doc_edits.edit_document(state.services.catalog, kb, doc_id, edit))


def _remove_document(state: ApiState, kb: str, doc: DocRecord) -> int:
    """Remove a document's chunks and catalog row, and its uploaded file (the caller holds the
    write lock); the number of chunks removed."""
    chunks_removed = state.services.kbs.open(kb).remove_document(doc)
    upload_dir = kb_upload_dir(state.services.data_dir, kb).resolve()
    if doc.origin == str(upload_dir):
        (upload_dir / doc.source).unlink(missing_ok=True)
    return chunks_removed


@router.delete("/kbs/{kb}/documents/{doc_id}", response_model=DocumentDeleted)
def delete_document(kb: KbName, doc_id: str, state: State, caller: Caller) -> Any:
    """Remove a document's chunks from both indexes and the catalog (and its uploaded file)."""
    caller.require_write(kb)
    catalog = state.services.catalog
    catalog.require_kb(kb)
    with _busy_is_conflict(), state.services.kbs.writing(kb):
        doc = catalog.get_doc(kb, doc_id)
        if doc is None:
            raise NotFound(f"unknown document {doc_id!r} in knowledge base {kb!r}", field="doc_id")
        chunks_removed = _remove_document(state, kb, doc)
    return DocumentDeleted(doc_id=doc_id, source=doc.source, chunks_removed=chunks_removed)


@router.post("/kbs/{kb}/documents/bulk", response_model=BulkResult,
             responses={409: {"description": "An ingest job is writing the knowledge base"}})
def bulk_documents(kb: KbName, body: DocumentsBulk, state: State, caller: Caller) -> Any:
    """Delete or tag many documents at once, under one hold of the write lock (409 while an ingest
    job writes the knowledge base): one result per doc id, `not_found` for ids it does not hold
    (the others are still done)."""
    caller.require_write(kb)
    edit = DocEdit(add_tags=check_tags(body.tags, "tags"), remove_tags=body.remove_tags) if body.action == "tag" else None
    catalog = state.services.catalog
    catalog.require_kb(kb)
    results: list[BulkItem] = []
    with _busy_is_conflict(), state.services.kbs.writing(kb):
        for doc_id in dict.fromkeys(body.doc_ids):
            doc = catalog.get_doc(kb, doc_id)
            if doc is None:
                results.append(BulkItem(doc_id=doc_id, status="not_found"))
            elif edit is None:
                results.append(BulkItem(doc_id=doc_id, status="deleted", source=doc.source,
                                        chunks_removed=_remove_document(state, kb, doc)))
            else:
                edited = doc_edits.edit_document(catalog, kb, doc_id, edit)
                results.append(BulkItem(doc_id=doc_id, status="tagged", source=doc.source, tags=edited.tags))
    missing = sum(r.status == "not_found" for r in results)
    return BulkResult(action=body.action, done=len(results) - missing, not_found=missing, results=results)


@router.post("/kbs/{kb}/documents", response_model=JobAccepted, status_code=202,
             responses={413: {"description": "A file is over RAG_MAX_UPLOAD_MB"},
                        415: {"description": "Unsupported file type"}})
def upload_documents(kb: KbName, state: State, caller: Caller, response: Response,
                     files: Annotated[list[UploadFile], File(description="One or many files (field `files`)")],
                     tags: Annotated[list[str], Form(description="key=value tags for every file")] = [],
                     edits: Annotated[str, Form(description="A file that replaces a document with other bytes: "
                                                "`keep` its chunk edits (re-applied where their chunk text is "
                                                "still there; the default) or `drop` them")] = KEEP) -> Any:
    """Upload documents and ingest them in a background job: 202 with the job id; poll
    `GET /v1/jobs/{job_id}`. A name already in the knowledge base replaces that document (only
    re-indexed when its bytes changed). At most 32 files per request."""
    caller.require_write(kb)
    state.services.catalog.require_kb(kb)
    if len(files) > MAX_FILES_PER_UPLOAD:
        raise InvalidRequest(f"{len(files)} files in one request; the limit is {MAX_FILES_PER_UPLOAD}", field="files")
    tag_map = parse_tags(tags)
    check_mode(edits)
    limit_mb = state.settings.max_upload_mb
    names: list[str] = []
    for upload in files:
        name = sanitize_filename(upload.filename)
        check_type(name)
        if upload.size is not None and upload.size > limit_mb * MIB:
            raise too_large(name, limit_mb)
        if name in names:
            raise InvalidRequest(f"the file name {name!r} appears twice in this upload", field="files")
        names.append(name)
    job_id = new_job_id()
    staging = staging_dir(state.services.data_dir, job_id)
    staged: dict[str, Path] = {}
    try:
        for upload, name in zip(files, names):
            upload.file.seek(0)
            save_stream(upload.file, staging / name, limit_mb * MIB, name, limit_mb)
            staged[name] = staging / name
    except BaseException:
        remove_tree(staging)
        raise
    entries = [{"filename": n, "size": p.stat().st_size, "status": "queued"} for n, p in staged.items()]
    job = Job(job_id, kb, caller.key_id, "queued", time.time(), entries, tags=tag_map, edits=edits)
    state.jobs.submit(job, staged)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(job_id=job_id, kb=kb, status="queued", status_url=f"/v1/jobs/{job_id}",
                       files=[{"filename": e["filename"], "size": e["size"]} for e in entries])


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(job_id: str, state: State, caller: Caller) -> Any:
    """Status, progress and per-file results of an ingest job."""
    job = state.jobs.get(job_id)
    caller.require_read(job.kb)
    return job.as_dict()


@router.post("/jobs/{job_id}/retry", response_model=JobAccepted, status_code=202, tags=["jobs"],
             responses={409: {"description": "The job has not finished"},
                        422: {"description": "No failed file of the job can be retried (`job_id`)"}})
def retry_job(job_id: str, state: State, caller: Caller, response: Response) -> Any:
    """Re-run the failed files of a finished job in a new job (`retry_of`): an upload's failed files
    from their bytes, kept for RAG_FAILED_UPLOAD_KEEP_HOURS after the job (then removed, as they are
    when the knowledge base is dropped); a URL import fetched again; a re-parse from the stored
    uploads. `not_retried` lists the failed files that could not be, with why."""
    caller.require_write(state.jobs.get(job_id).kb)
    job, not_retried = state.jobs.retry(job_id, caller.key_id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobAccepted(job_id=job.id, kb=job.kb, status=job.status, status_url=f"/v1/jobs/{job.id}",
                       files=[{"filename": f["filename"], "size": f["size"]} for f in job.files], retry_of=job_id,
                       not_retried=not_retried)


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"])
def list_jobs(state: State, caller: Caller, kb: str | None = Query(None, pattern=KB_PATTERN),
              limit: int = Query(50, ge=1, le=500)) -> Any:
    """Recent ingest jobs of the knowledge bases this key may read, newest first."""
    return [j.as_dict() for j in state.jobs.list(lambda name: caller.can_read(name) and (kb is None or name == kb),
                                                 limit)]
