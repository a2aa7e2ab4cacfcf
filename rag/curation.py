"""Chunk curation on a knowledge base (the caller holds its write lock, `KnowledgeBases.writing`):
a chunk's text edited or a chunk disabled (`edit_chunk`), a chunk added by hand (`add_chunk`) or
deleted (`delete_chunk`: a chunk of the file is disabled instead); the edit records are
rag/chunk_edits.py.

A change of what is indexed follows the catalog's crash-safety rules (rag/catalog.py): the
document is marked pending with the new chunk's id, the new chunk is embedded and written to both
indexes (not yet live), then one catalog transaction swaps it in for the old chunk and records the
edit, and the old chunk (and its generated-question vectors, which describe the old text) are
deleted. A killed edit leaves a pending document, which the next ingest or `rag check --repair`
finishes or rolls back, like a killed ingest. Disabling changes the catalog alone."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rag.catalog import DocRecord
from rag.chunk_edits import ChunkEdit, ChunkPatch, NewChunk, curated, manual_chunk
from rag.errors import Busy, InvalidRequest, NotFound
from rag.ids import EXTRA_SEP, chunk_id_for, edit_key_for, parent_of
from rag.kb import KnowledgeBase
from rag.types import Chunk


@dataclass
class CuratedChunk:
    """A chunk after a curation step: the chunk, its document, and its edit (None: none left)."""

    chunk: Chunk
    doc: DocRecord
    edit: ChunkEdit | None

    @property
    def disabled(self) -> bool:
        return self.chunk.id in self.doc.disabled_ids


def find_chunk(kb: KnowledgeBase, chunk_id: str) -> tuple[DocRecord, Chunk]:
    """A live chunk of `kb` (disabled ones included) and its document; NotFound naming `chunk_id`."""
    chunk = kb.get_chunks([chunk_id]).get(chunk_id) if EXTRA_SEP not in chunk_id else None
    doc = kb.catalog.get_doc(kb.name, chunk.doc_id) if chunk is not None else None
    if chunk is None or doc is None or chunk_id not in doc.chunk_ids:
        raise NotFound(f"unknown chunk {chunk_id!r} in knowledge base {kb.name!r}", field="chunk_id")
    if doc.state != "indexed":
        raise Busy(f"the document of chunk {chunk_id!r} is being written (a run was interrupted: "
                   "`rag check --repair` finishes it)", field="chunk_id")
    return doc, chunk


def edit_of(kb: KnowledgeBase, doc: DocRecord, chunk: Chunk) -> ChunkEdit:
    """The edit of `chunk` recorded so far, or a new one (not saved) with the chunk as its base."""
    key = chunk.edit_key or edit_key_for(chunk.text)
    return kb.catalog.chunk_edit(kb.name, doc.doc_id, key) or ChunkEdit(kb.name, doc.doc_id, key, chunk.text,
                                                                       chunk.embed_text)


def edit_chunk(kb: KnowledgeBase, chunk_id: str, patch: ChunkPatch) -> CuratedChunk:
    """Apply `patch` to the chunk `chunk_id` and record it (see the module docstring)."""
    doc, current = find_chunk(kb, chunk_id)
    edit = patch.applied_to(edit_of(kb, doc, current))
    return commit(kb, doc, current, rebuild(kb, doc, current, edit), edit)


def add_chunk(kb: KnowledgeBase, doc_id: str, new: NewChunk) -> CuratedChunk:
    """Add a chunk by hand to the document `doc_id` (embedded and indexed at once) and record it."""
    doc = kb.catalog.get_doc(kb.name, doc_id)
    if doc is None:
        raise NotFound(f"unknown document {doc_id!r} in knowledge base {kb.name!r}", field="doc_id")
    if doc.state != "indexed":
        raise Busy(f"document {doc_id!r} is being written (a run was interrupted: `rag check --repair` finishes "
                   "it)", field="doc_id")
    edit = new.edit(kb.name, doc.doc_id)
    return commit(kb, doc, None, manual_chunk(doc, edit), edit)


def delete_chunk(kb: KnowledgeBase, chunk_id: str) -> DocRecord:
    """Delete the chunk added by hand `chunk_id` (and its edit); the document after it. A chunk the
    chunker gave is refused: every re-ingest of its file writes it again (disable it instead)."""
    doc, current = find_chunk(kb, chunk_id)
    edit = edit_of(kb, doc, current)
    if not edit.manual:
        raise InvalidRequest(f"chunk {chunk_id!r} comes from the document's file, and a re-ingest writes it "
                             "again: disable it (`disabled: true`) to keep it out of retrieval; only a chunk "
                             "added by hand can be deleted", field="chunk_id")
    return kb.swap_chunk(doc, edit, None, own_ids(doc, current))


def own_ids(doc: DocRecord, chunk: Chunk) -> list[str]:
    """The ids `chunk` has in `doc`: its own and its generated-question vectors'."""
    return [i for i in doc.chunk_ids if parent_of(i) == chunk.id]


def rebuild(kb: KnowledgeBase, doc: DocRecord, current: Chunk, edit: ChunkEdit) -> Chunk:
    """The chunk `edit` gives, from the stored chunk `current` (its base read back from the edit)."""
    if edit.manual:
        return manual_chunk(doc, edit)
    base = current
    if current.edit_key is not None:  # written from an edit: back to the chunk the chunker gave
        base = replace(current, id=chunk_id_for(kb.name, current.source, current.start, current.end, edit.base_text),
                       text=edit.base_text, embed_text=edit.base_embed, edit_key=None)
    return curated(base, edit)


def commit(kb: KnowledgeBase, doc: DocRecord, current: Chunk | None, new: Chunk, edit: ChunkEdit) -> CuratedChunk:
    """Write `new` in place of `current` (None: a chunk added) and record `edit` with the swap
    (`KnowledgeBase.swap_chunk`); only the catalog changes when `new` is `current`."""
    replaces = []
    if current is not None and new.id != current.id:
        replaces = own_ids(doc, current)
    saved = kb.swap_chunk(doc, edit, new, replaces)
    return CuratedChunk(new, saved, None if edit.empty else edit)
