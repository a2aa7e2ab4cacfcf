"""`rag check --repair` (and `POST /v1/kbs/{kb}/repair`): bring the catalog, the vector store and
the lexical index of a knowledge base back to agreement from any state a crash can leave, then
check again. Under the knowledge base's write lock; nothing is re-parsed or re-embedded:

- the vector store recovers the collection first (`VectorStore.recover`: the embedded store
  reloads it, its log replaying what a failed flush left out, or rebuilds it from what reads back);
- drops a killed process left are finished; orphan collections and BM25 indexes removed;
- a pending document (a killed ingest) goes back to the version it replaces, or is removed when it
  had none, and the chunks it was writing are deleted; a document being removed is removed;
  the old chunks of a swapped document (garbage) are deleted;
- ids in a store that the catalog does not list are deleted; ids missing in BM25 are indexed again
  from the vector payloads;
- a document with ids missing in the vector store (their text is gone with them) is removed from
  the catalog and both stores, and reported by source: the next `rag ingest` of its folder (or a
  new upload) indexes it again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from rag.kb import CheckReport, KnowledgeBases
from rag.protocols import RecoveryReport

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    """What `repair` did, per category, and the check it ran afterwards."""

    kb: str
    finished_drops: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)  # pending documents back to their indexed version
    removed_pending: list[str] = field(default_factory=list)  # pending documents with no indexed version
    finished_removals: list[str] = field(default_factory=list)  # documents a killed `rag rm` was removing
    garbage_deleted: int = 0  # old chunks of swapped documents
    extra_deleted: int = 0  # ids in a store the catalog does not list
    lexical_restored: int = 0  # ids missing in BM25, indexed again from their payloads
    removed_missing: list[str] = field(default_factory=list)  # documents whose vectors were gone: re-ingest them
    orphans_dropped: list[str] = field(default_factory=list)
    recovery: RecoveryReport | None = None  # the vector store's own recovery, when it had to do any
    after: CheckReport | None = None

    @property
    def changed(self) -> bool:
        return bool(self.recovery or self.finished_drops or self.rolled_back or self.removed_pending or self.finished_removals
                    or self.garbage_deleted or self.extra_deleted or self.lexical_restored or self.removed_missing
                    or self.orphans_dropped)


def repair(kbs: KnowledgeBases, name: str, *, wait: bool = False,
           allowed: Callable[[str], bool] | None = None) -> RepairReport:
    """Repair knowledge base `name` (see the module docstring) under its write lock (Busy while
    another writer has it, unless `wait`). Killed drops and orphans are repaired for the knowledge
    bases `allowed` accepts (default: all)."""
    report = RepairReport(name)
    with kbs.writing(name, wait):
        report.finished_drops = kbs.finish_drops(allowed)
        kb = kbs.open(name)
        recovery = kbs.store.recover(kb.collection)  # points it could not bring back show as missing below
        report.recovery = None if recovery.action == "none" else recovery
        catalog = kb.catalog
        for doc in catalog.list_docs(name):
            if doc.state == "pending":
                (report.rolled_back if kb.roll_back(doc) else report.removed_pending).append(doc.source)
            elif doc.state == "deleting":
                kb.remove_document(doc)
                report.finished_removals.append(doc.source)
            elif doc.pending_ids:
                report.garbage_deleted += kb.delete_garbage(doc)
        found = kb.check()
        missing = set(found.missing_in_vectors)
        if missing:
            for doc in catalog.list_docs(name):
                if missing & set(doc.chunk_ids):
                    kb.remove_document(doc)
                    report.removed_missing.append(doc.source)
        if report.removed_missing:  # removing documents changed the stores: scan them again
            found = kb.check()
        extra = sorted(set(found.extra_in_vectors) | set(found.extra_in_lexical))
        kb.delete(extra)
        report.extra_deleted = len(extra)
        if found.missing_in_lexical:
            chunks = [c for page in kb.iter_chunks(found.missing_in_lexical) for c in page]
            kb.lexical.add(chunks)
            report.lexical_restored = len(chunks)
        report.orphans_dropped = kbs.drop_orphans(allowed=allowed)
        report.after = kbs.check(name, allowed)
    if report.changed:
        log.info("repaired knowledge base %s: %d drops finished, %d documents rolled back, %d removed, %d chunks "
                 "deleted, %d restored in BM25, %d orphans dropped", name, len(report.finished_drops),
                 len(report.rolled_back), len(report.removed_pending) + len(report.finished_removals)
                 + len(report.removed_missing), report.garbage_deleted + report.extra_deleted,
                 report.lexical_restored, len(report.orphans_dropped))
    return report
