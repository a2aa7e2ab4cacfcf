"""A knowledge base's ingest settings (`GET/PATCH /v1/kbs/{kb}/settings`) and re-parsing its uploaded
documents with them, or with other chunking for once (`POST /v1/kbs/{kb}/documents/reparse`).

The settings apply to every later ingest of the knowledge base: API uploads and URL imports, re-parses,
and `rag ingest` unless its flags say otherwise (precedence: rag/kb_settings.py). A chunking change
does not touch indexed documents: the answer says how many were chunked before it and the console
offers to re-parse them (a re-parse re-reads the stored upload; nothing is re-embedded with another
model). A re-parse runs as an ingest job (`GET /v1/jobs/{id}`: leased, resumed by another replica).

The embedding model is not a setting: a knowledge base records the model it was built with, and
when the server's (RAG_EMBED_MODEL) differs, in name or dimension, it cannot be queried or written
(409 `embedding_mismatch`) until it is re-embedded. The settings say so (`reembed_needed`, both
models, a message), and `POST /v1/kbs/{kb}/reindex` re-embeds it as a `reindex` job
(`KnowledgeBases.reindex`: chunk texts read back, embedded with the server's model into a new
collection, switched to at the end). Asked when the models are the same, it re-embeds all the same
(a rebuilt collection, as `rag reindex` does) and says so."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Response

from api.deps import ApiState, Caller, State
from api.errors import Conflict
from api.jobs import Job, new_job_id
from api.routes.kbs import _busy_is_conflict
from api.schemas import (KB_PATTERN, DocError, KbSettingsOut, KbSettingsPatch, ReindexAccepted, ReparseAccepted,
                         ReparseRequest)
from api.uploads import kb_upload_dir
from ingest.service import kb_chunking, server_chunking
from rag.errors import ConfigError, InvalidRequest
from rag.kb_lifecycle import ModelCheck
from rag.kb_settings import CHUNKING_FIELDS, SETTINGS_KEY, KbSettings, resolve

router = APIRouter(prefix="/v1", tags=["knowledge bases"])
KbName = Annotated[str, PathParam(pattern=KB_PATTERN, description="Knowledge base name")]


def _invalid(exc: ConfigError) -> InvalidRequest:
    return InvalidRequest(exc.message, field=exc.field)


def settings_out(state: ApiState, kb: str, message: str = "") -> KbSettingsOut:
    record = state.services.catalog.require_kb(kb)
    own = KbSettings.from_meta(record.meta)
    server = server_chunking(state.settings)
    chunking = resolve(server, own.overrides())
    stale = (state.services.catalog.count_docs_ingested_before(kb, own.chunking_changed_at)
             if own.chunking_changed_at else 0)
    model = state.services.kbs.model_check(record)
    return KbSettingsOut(kb=kb, chunker=chunking.chunker, chunk_size=chunking.chunk_size,
                         chunk_overlap=chunking.chunk_overlap, ocr=chunking.ocr, tags=own.tags,
                         embed_model=record.embed_model, dim=record.dim, reembed_needed=model.differs,
                         server_embed_model=model.server_model, server_dim=model.server_dim,
                         reembed_message=reembed_message(model),
                         own=[f for f in (*CHUNKING_FIELDS, "tags") if getattr(own, f) not in (None, {})],
                         server=server.__dict__, stale_documents=stale, reparse_needed=stale > 0,
                         message=message or (f"{stale} document(s) were chunked before the last chunking change: "
                                             "re-parse them to apply it (no re-embedding with another model "
                                             "is needed)" if stale else ""))


def reembed_message(model: ModelCheck) -> str:
    return f"{model.message()} (POST /v1/kbs/{model.kb}/reindex)" if model.differs else ""


@router.get("/kbs/{kb}/settings", response_model=KbSettingsOut)
def get_settings(kb: KbName, state: State, caller: Caller) -> Any:
    """The knowledge base's ingest settings as they apply now (its own, else the server's), its
    embedding model (read-only) against the server's (`reembed_needed`) and how many documents wait
    for a re-parse after a chunking change. Readable also when the models differ."""
    caller.require_read(kb)
    return settings_out(state, kb)


@router.patch("/kbs/{kb}/settings", response_model=KbSettingsOut,
              responses={409: {"description": "An ingest job is writing the knowledge base"}})
def patch_settings(kb: KbName, body: KbSettingsPatch, state: State, caller: Caller) -> Any:
    """Change the knowledge base's ingest settings (a field set to null: back to the server's).
    They apply to every later ingest; a chunking change says how many documents to re-parse
    (`POST /v1/kbs/{kb}/documents/reparse` with `all: true`). 422 naming the field for bad values
    (`chunk_overlap` not smaller than `chunk_size`, with the size it would have)."""
    caller.require_write(kb)
    catalog = state.services.catalog
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    with _busy_is_conflict(), state.services.kbs.writing(kb):  # not while a job reads them
        own = KbSettings.from_meta(catalog.require_kb(kb).meta)
        try:
            new = own.updated(changes)
            resolve(server_chunking(state.settings), new.overrides())
        except ConfigError as exc:
            raise _invalid(exc) from None
        catalog.update_kb_meta(kb, {SETTINGS_KEY: new.to_meta() or None})
    changed = [f for f in CHUNKING_FIELDS if getattr(new, f) != getattr(own, f)]
    return settings_out(state, kb, "" if changed else "saved; the chunking did not change, nothing to re-parse")


@router.post("/kbs/{kb}/documents/reparse", response_model=ReparseAccepted, status_code=202,
             responses={422: {"description": "Bad chunking (`settings.<field>`) or no document given"}})
def reparse_documents(kb: KbName, body: ReparseRequest, state: State, caller: Caller, response: Response) -> Any:
    """Re-parse documents from their stored uploaded files with the knowledge base's chunking (or
    `settings` over it, for this re-parse only), forced even when their bytes are unchanged; each
    keeps its tags and title. Runs as an ingest job (202; poll `status_url`). A document ingested
    from a folder has no stored file (`not_uploaded`: re-ingest it with `rag ingest`); per-id errors
    are in `errors`, the others are still queued (`job_id` null when none could be)."""
    caller.require_write(kb)
    catalog = state.services.catalog
    catalog.require_kb(kb)
    if not body.doc_ids and not body.all:
        raise InvalidRequest("give doc_ids, or all: true", field="doc_ids")
    overrides = body.settings.model_dump(exclude_none=True) if body.settings else {}
    try:
        chunking = kb_chunking(state.services, kb, overrides, prefix="settings.")
    except ConfigError as exc:
        raise _invalid(exc) from None
    upload_dir = kb_upload_dir(state.services.data_dir, kb).resolve()
    docs = catalog.list_docs(kb, state="indexed") if body.all else [catalog.get_doc(kb, d) for d in body.doc_ids]
    queued: list[dict[str, Any]] = []
    errors: list[DocError] = []
    for doc_id, doc in zip(body.doc_ids or [d.doc_id for d in docs], docs):
        if doc is None:
            errors.append(DocError(doc_id=doc_id, error="not_found", message=f"unknown document {doc_id!r}"))
        elif doc.origin != str(upload_dir):
            errors.append(DocError(doc_id=doc_id, error="not_uploaded", message=(
                f"{doc.source} was ingested from a folder, not uploaded: the server keeps no file of it to "
                "re-parse; run `rag ingest` on its folder (the knowledge base's settings apply)")))
        elif not (upload_dir / doc.source).is_file():
            errors.append(DocError(doc_id=doc_id, error="file_missing",
                                   message=f"the uploaded file of {doc.source} is gone; upload it again"))
        elif all(q["doc_id"] != doc_id for q in queued):
            queued.append({"doc_id": doc_id, "source": doc.source})
    if not queued:
        return ReparseAccepted(job_id=None, kb=kb, **chunking.__dict__, documents=[], errors=errors)
    files = [{"filename": q["source"], "size": (upload_dir / q["source"]).stat().st_size, "status": "queued",
              "doc_id": q["doc_id"]} for q in queued]
    job = Job(new_job_id(), kb, caller.key_id, "queued", time.time(), files, kind="reparse", chunking=overrides)
    state.jobs.submit(job, {})
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return ReparseAccepted(job_id=job.id, kb=kb, status_url=f"/v1/jobs/{job.id}", **chunking.__dict__,
                           documents=queued, errors=errors)


@router.post("/kbs/{kb}/reindex", response_model=ReindexAccepted, status_code=202,
             responses={409: {"description": "Another job (or `rag ingest`) is writing the knowledge base"}})
def reindex_kb(kb: KbName, state: State, caller: Caller, response: Response) -> Any:
    """Re-embed the knowledge base with the server's embedding model as a `reindex` job (202; poll
    `status_url`: progress in chunks embedded of `chunks_known`); queries keep answering from the
    old vectors until it switches at the end. Allowed when the models are the same too: it
    re-embeds with the same model (`reembed_needed` false in the answer). 409 while another job of
    the knowledge base is queued or running, or another process holds its write lock."""
    caller.require_write(kb)
    kbs = state.services.kbs
    model = kbs.model_check(kbs.catalog.require_kb(kb))
    others = state.jobs.unfinished(kb)
    if others:
        raise Conflict(f"knowledge base {kb!r} has a {others[0].kind} job {others[0].id} {others[0].status}; "
                       "re-embed it once that has finished", field="kb")
    with _busy_is_conflict(), kbs.writing(kb):  # not queued behind a `rag ingest` of another process
        pass
    job = Job(new_job_id(), kb, caller.key_id, "queued", time.time(), [], kind="reindex")
    state.jobs.submit(job, {})
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    message = (f"re-embedding {kb!r} from {model.kb_model!r} (dim {model.kb_dim}) with {model.server_model!r}"
               if model.differs else
               f"the models are the same ({model.kb_model!r}): re-embedding {kb!r} with it all the same")
    return ReindexAccepted(job_id=job.id, kb=kb, status=job.status, status_url=f"/v1/jobs/{job.id}",
                           embed_model=model.kb_model, dim=model.kb_dim, to_embed_model=model.server_model,
                           to_dim=model.server_dim, reembed_needed=model.differs, message=message)
