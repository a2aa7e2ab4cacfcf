"""Chunk curation: a chunk's text edited (re-embedded and re-indexed at once) or the chunk disabled
(kept, never retrieved), a chunk or a Q&A pair added by hand to a document (and deleted again),
under the knowledge base's write lock (409 while an ingest job writes it).
The work is rag/curation.py; the edits live in the catalog (rag/chunk_edits.py) and survive a
re-ingest of the file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Response

from api.deps import ApiState, Caller, State
from api.routes.kbs import _busy_is_conflict
from api.schemas import KB_PATTERN, ChunkCreate, ChunkEditOut, ChunkOut, ChunkPatchIn
from rag import curation
from rag.catalog import DocRecord
from rag.chunk_edits import ChunkEdit, ChunkPatch, NewChunk
from rag.types import Chunk

router = APIRouter(prefix="/v1", tags=["chunks"])
KbName = Annotated[str, PathParam(pattern=KB_PATTERN, description="Knowledge base name")]
_CONFLICT = {409: {"description": "An ingest job is writing the knowledge base"}}


def chunk_out(chunk: Chunk, doc: DocRecord, edit: ChunkEdit | None, questions: list[str] | None = None) -> ChunkOut:
    """A chunk as the API shows it, with its edit (None: it has none) and generated questions."""
    shown = None
    if edit is not None:
        shown = ChunkEditOut(edited=edit.text is not None and not edit.manual, manual=edit.manual,
                             original_text=edit.base_text if edit.text is not None and not edit.manual else None,
                             disabled=edit.disabled, keywords=list(edit.keywords), questions=list(edit.questions),
                             updated_at=edit.updated_at)
    return ChunkOut(chunk_id=chunk.id, text=chunk.text, start=chunk.start, end=chunk.end,
                    section_path=list(chunk.section_path), page=chunk.page, kind=chunk.kind,
                    embed_text=chunk.embed_text, questions=questions or [], disabled=chunk.id in doc.disabled_ids,
                    edit=shown)


def _curated_out(done: curation.CuratedChunk) -> ChunkOut:
    return chunk_out(done.chunk, done.doc, done.edit)


def _writing(state: ApiState, kb: str):
    state.services.catalog.require_kb(kb)
    return state.services.kbs.writing(kb)


@router.patch("/kbs/{kb}/chunks/{chunk_id}", response_model=ChunkOut, responses=_CONFLICT)
def edit_chunk(kb: KbName, chunk_id: str, body: ChunkPatchIn, state: State, caller: Caller) -> Any:
    """Edit a chunk: `text` replaces its text (re-embedded and re-indexed in BM25 at once; the chunk
    gets a new id, derived from its new content: the response has it), `disabled` keeps it but no
    search returns it (dense, BM25, hybrid), `keywords` and `questions` are matched by retrieval with
    the chunk's text (written before the text it embeds: BM25 and the dense vector hold them; a new
    id too). Each list replaces the one before; `[]` removes it. The edit is recorded and re-applied when the file is
    ingested again (a changed file: as the upload's `edits` says)."""
    caller.require_write(kb)
    patch = ChunkPatch(text=body.text, disabled=body.disabled, keywords=body.keywords, questions=body.questions)
    with _busy_is_conflict(), _writing(state, kb):
        return _curated_out(curation.edit_chunk(state.services.kbs.open(kb), chunk_id, patch))


@router.post("/kbs/{kb}/documents/{doc_id}/chunks", response_model=ChunkOut, status_code=201, responses=_CONFLICT)
def add_chunk(kb: KbName, doc_id: str, body: ChunkCreate, state: State, caller: Caller) -> Any:
    """Add a chunk by hand to a document: `text`, or `question` and `answer` (a Q&A chunk, its
    question embedded). Embedded and indexed at once, listed after the document's other chunks,
    kept when the file is ingested again (a changed file: as the upload's `edits` says) and
    deleted with the document."""
    caller.require_write(kb)
    new = NewChunk(text=body.text, question=body.question, answer=body.answer)
    with _busy_is_conflict(), _writing(state, kb):
        return _curated_out(curation.add_chunk(state.services.kbs.open(kb), doc_id, new))


@router.delete("/kbs/{kb}/chunks/{chunk_id}", status_code=204, response_class=Response, responses=_CONFLICT)
def delete_chunk(kb: KbName, chunk_id: str, state: State, caller: Caller) -> Response:
    """Delete a chunk added by hand (with its keywords and questions): gone from every search at
    once. A chunk of the document's file is refused (422 naming `chunk_id`): a re-ingest would write
    it again, so disable it instead."""
    caller.require_write(kb)
    with _busy_is_conflict(), _writing(state, kb):
        curation.delete_chunk(state.services.kbs.open(kb), chunk_id)
    return Response(status_code=204)
