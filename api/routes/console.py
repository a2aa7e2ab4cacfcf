"""What the knowledge-base console (`/console`) needs beyond the other routes: a document's chunks
in order, its parsed text (to show a chunk inside it), and a read-only view of the resolved
settings and models with secrets masked. Everything else the console does goes through the
documented routes (`/v1/kbs`, `/v1/kbs/{kb}/documents`, `/v1/jobs/{id}`, `/v1/query`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Query
from fastapi.responses import FileResponse

from api.deps import ApiState, Caller, State
from api.errors import Conflict
from api.routes.chunks import chunk_out
from api.schemas import KB_PATTERN, DocumentChunks, DocumentText, SystemInfo
from rag.catalog import DocRecord
from rag.errors import NotFound, ParseError, RagError
from rag.ids import edit_key_for, sha256_hex
from rag.kb import EXTRA_SEP, parent_of

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["console"])
page_router = APIRouter()
STATIC = Path(__file__).resolve().parents[1] / "static"
KbName = Annotated[str, PathParam(pattern=KB_PATTERN, description="Knowledge base name")]


@page_router.get("/console", include_in_schema=False)
def console_page() -> FileResponse:
    return FileResponse(STATIC / "console.html", media_type="text/html; charset=utf-8")


def _document(state: ApiState, kb: str, doc_id: str) -> DocRecord:
    state.services.catalog.require_kb(kb)
    doc = state.services.catalog.get_doc(kb, doc_id)
    if doc is None:
        raise NotFound(f"unknown document {doc_id!r} in knowledge base {kb!r}", field="doc_id")
    return doc


@router.get("/kbs/{kb}/documents/{doc_id}/chunks", response_model=DocumentChunks)
def document_chunks(kb: KbName, doc_id: str, state: State, caller: Caller,
                    limit: int | None = Query(None, ge=1, le=10_000, description="Chunks per page (default: all)"),
                    offset: int = Query(0, ge=0, le=10_000_000, description="Chunks to skip")) -> Any:
    """The document's chunks in reading order (character start), each with its section path, page,
    span, kind (`text` or `qa`), the questions generated for it (`--generate-questions`), whether it
    is disabled and its edit (chunk curation; chunks added by hand come after the others). Paged
    with `limit` / `offset` in the order the ingest wrote them (reading order); `total` counts them
    all, and only the page's chunks are read from the store."""
    caller.require_read(kb)
    doc = _document(state, kb, doc_id)
    ids = list(dict.fromkeys(doc.chunk_ids))
    parents = [i for i in ids if EXTRA_SEP not in i]
    page = parents[offset:] if limit is None else parents[offset:offset + limit]
    wanted = set(page)
    knowledge = state.services.kbs.open(kb) if page else None
    chunks = knowledge.get_chunks(page) if knowledge else {}
    questions: dict[str, list[str]] = {}
    extras = knowledge.get_chunks([i for i in ids if EXTRA_SEP in i and parent_of(i) in wanted]) if knowledge else {}
    for cid in sorted(extras):
        questions.setdefault(parent_of(cid), []).append(extras[cid].embed_text or "")
    edits = {e.key: e for e in state.services.catalog.chunk_edits(kb, doc_id)} if page else {}
    at = {cid: n for n, cid in enumerate(ids)}  # the order written (chunks added by hand: the order added)
    rows = [chunk_out(c, doc, edits.get(c.edit_key or edit_key_for(c.text)), questions.get(c.id, []))
            for c in sorted(chunks.values(), key=lambda c: (c.edit_key in edits and edits[c.edit_key].manual,
                                                            c.start, c.end, at[c.id]))]
    return DocumentChunks(kb=kb, doc_id=doc.doc_id, source=doc.source, title=doc.title, state=doc.state,
                          chunks=rows, missing=len(page) - len(rows), total=len(parents), offset=offset)


@router.get("/kbs/{kb}/documents/{doc_id}/text", response_model=DocumentText,
            responses={409: {"description": "The file changed or is gone since it was indexed"}})
def document_text(kb: KbName, doc_id: str, state: State, caller: Caller) -> Any:
    """The document's parsed text, the one chunk offsets point into: the stored file parsed again
    with the ingest's OCR settings, after checking it still has the bytes that were indexed (409
    when it changed or is gone). A scanned document is OCR'd again, which takes seconds a page."""
    caller.require_read(kb)
    doc = _document(state, kb, doc_id)
    from ingest.parse import parse_bytes
    from ingest.service import ocr_options

    path = Path(doc.origin) / doc.source
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Conflict(f"the file of {doc.source!r} is no longer where it was indexed from", field="doc_id") from exc
    if sha256_hex(data) != doc.content_hash:
        raise Conflict(f"{doc.source!r} changed since it was indexed: re-ingest it to see its text", field="doc_id")
    try:
        parsed = parse_bytes(data, path.suffix, path.name, ocr=ocr_options(state.settings))
    except ParseError as exc:
        raise Conflict(f"{doc.source!r} cannot be parsed again: {exc.message}", field="doc_id") from exc
    return DocumentText(kb=kb, doc_id=doc.doc_id, source=doc.source, title=parsed.title, text=parsed.text,
                        format=str(parsed.metadata.get("format", doc.format)))


@router.get("/system", response_model=SystemInfo)
def system_info(state: State, caller: Caller) -> Any:
    """The resolved settings (secrets masked), the embedding model and why it was chosen, the reranker
    (or why reranking is off), the LLM and its endpoint, the store and lexical backends."""
    services, settings = state.services, state.settings
    try:
        resolution = services.embedder_resolution
        embedder = {"name": resolution.embedder.name, "reason": resolution.reason}
    except RagError as exc:
        embedder = {"name": None, "reason": exc.message}
    try:
        reranker = services.reranker
        rerank = {"enabled": reranker is not None, "name": getattr(reranker, "name", None),
                  "reason": None if reranker is not None else "no reranker model available"}
    except RagError as exc:
        rerank = {"enabled": False, "name": None, "reason": exc.message}
    llm = {"endpoint": settings.llm_base_url, "model": settings.llm_model if settings.llm_base_url else None,
           "embedded": settings.llm_base_url is None}
    if "llm" in services.__dict__:
        llm["name"] = getattr(services.llm, "name", None)
    return SystemInfo(settings=settings.public_dict(), embedder=embedder, reranker=rerank, llm=llm,
                      vector_backend=settings.resolved_vector_backend,
                      lexical_backend=settings.resolved_lexical_backend, ready=state.warmed_up,
                      admin=caller.admin)
