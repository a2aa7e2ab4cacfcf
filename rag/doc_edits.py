"""Documents edited after their upload: their tags replaced, added to or removed, and their title
changed, one document or many (the console's bulk actions), each under the knowledge base's write
lock (`KnowledgeBases.writing`: `Busy` while an ingest job writes it).

Only the catalog changes. Searches read a document's tags from the catalog (`KnowledgeBase.
catalog_filter` turns a tag filter into the ids of the documents carrying the tags now, and
`KnowledgeBase.get_chunks` gives chunks their document's current tags), so an edit reaches every
retriever at once without rewriting the payloads of the stored chunks. A later ingest of the same
file with other tags (an upload's `tags`) sets the tags again, as it always did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rag.catalog import Catalog, DocRecord
from rag.errors import InvalidRequest, NotFound
from rag.types import check_tags


@dataclass(frozen=True)
class DocEdit:
    """What to change: `tags` replaces every tag (when given), then `add_tags` are set and
    `remove_tags` (keys) removed; `title` replaces the title (when given)."""

    tags: Mapping[str, str] | None = None
    add_tags: Mapping[str, str] = field(default_factory=dict)
    remove_tags: Sequence[str] = ()
    title: str | None = None

    def __post_init__(self) -> None:
        if self.tags is not None:
            object.__setattr__(self, "tags", check_tags(self.tags, "tags"))
        object.__setattr__(self, "add_tags", check_tags(self.add_tags, "add_tags"))
        object.__setattr__(self, "remove_tags", tuple(k.strip() for k in self.remove_tags))
        if self.tags is None and not self.add_tags and not self.remove_tags and self.title is None:
            raise InvalidRequest("nothing to change: give tags, add_tags, remove_tags or title", field="tags")
        if self.title is not None and not self.title.strip():
            raise InvalidRequest("the title cannot be empty", field="title")

    @property
    def changes_tags(self) -> bool:
        return self.tags is not None or bool(self.add_tags) or bool(self.remove_tags)

    def new_tags(self, current: Mapping[str, str]) -> dict[str, str]:
        tags = dict(self.tags if self.tags is not None else current)
        tags.update(self.add_tags)
        for key in self.remove_tags:
            tags.pop(key, None)
        return tags


def edit_document(catalog: Catalog, kb: str, doc_id: str, edit: DocEdit) -> DocRecord:
    """Apply `edit` to one document (the caller holds the write lock); NotFound naming `doc_id`."""
    doc = catalog.get_doc(kb, doc_id)
    if doc is None:
        raise NotFound(f"unknown document {doc_id!r} in knowledge base {kb!r}", field="doc_id")
    return catalog.update_doc_meta(kb, doc_id, tags=edit.new_tags(doc.tags) if edit.changes_tags else None,
                                   title=edit.title.strip() if edit.title is not None else None)
