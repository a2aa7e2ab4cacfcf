"""`rag check --repair` (`rag.repair.repair`, issue 31): from the states a crash can leave
(pending documents with and without an indexed version, a half-removed document, garbage of a
swap, extra ids in either store, ids missing in BM25 or in the vector store) back to a knowledge
base whose catalog, vectors and BM25 agree, saying what was done per category."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rag.errors import Busy
from rag.repair import repair
from tests.unit.kb_fixtures import KB, build_services, make_chunks
from tests.unit.rag.test_kb_locks import held_by_another_thread


def _vectors(services, chunks):
    return services.embedder.encode_corpus([c.match_text for c in chunks])


def _doc(services, source):
    return services.catalog.find_doc_by_source(KB, source)


def test_repair_brings_every_crash_state_back_to_agreement(tmp_path):
    services = build_services(tmp_path)
    kb = services.kbs.open(KB)
    catalog = services.catalog
    chunks = {c.id: c for c in make_chunks()}
    # a re-ingest of the manual killed after its new chunks were written, before the swap
    manual = _doc(services, "acme-x200-manual.pdf")
    new = [replace(chunks["warranty"], id="warranty-v2", text="The warranty now lasts three years.", doc_hash="h2")]
    catalog.mark_pending(replace(manual, content_hash="h2"), [c.id for c in new])
    kb.write(new, _vectors(services, new))
    # a new document killed the same way: no indexed version to go back to
    fresh = replace(chunks["vpn"], id="fresh-1", doc_id="doc-fresh", source="fresh.md", text="Ferries leave hourly.")
    catalog.mark_pending(replace(manual, doc_id="doc-fresh", source="fresh.md", content_hash="hf"), [fresh.id])
    kb.write([fresh], _vectors(services, [fresh]))
    # a `rag rm` killed after its mark; ids in one store only; an id lost by BM25; a vector lost
    catalog.mark_deleting(KB, _doc(services, "security-policy.html").doc_id)
    stray = replace(chunks["reset"], id="stray", text="A stray chunk nobody lists.")
    services.store.upsert(kb.collection, [stray], _vectors(services, [stray]))
    kb.lexical.add([replace(stray, id="stray-bm25")])
    kb.lexical.delete(["battery"])
    services.store.delete(kb.collection, ["sick"])
    before = services.kbs.check(KB)
    assert not before.ok and before.pending_documents == ["acme-x200-manual.pdf", "fresh.md", "security-policy.html"]

    done = repair(services.kbs, KB)

    assert done.rolled_back == ["acme-x200-manual.pdf"] and done.removed_pending == ["fresh.md"]
    assert done.finished_removals == ["security-policy.html"]
    assert done.removed_missing == ["员工休假制度.md"]  # its vector payload is gone: removed, reported by source
    assert (done.extra_deleted, done.lexical_restored) == (2, 1)
    assert done.after.ok and kb.check().ok
    rolled = _doc(services, "acme-x200-manual.pdf")
    assert (rolled.state, rolled.content_hash, rolled.chunk_ids) == ("indexed", manual.content_hash, manual.chunk_ids)
    assert sorted(d.source for d in catalog.list_docs(KB)) == ["acme-x200-manual.pdf"]
    assert kb.store.ids(kb.collection) == kb.lexical.ids() == kb.live_ids() == {"warranty", "battery", "reset"}
    hits = kb.search_bm25("battery charge", 3)
    assert hits and hits[0].chunk_id == "battery"  # restored in BM25 from its payload
    again = repair(services.kbs, KB)
    assert not again.changed and again.after.ok


def test_repair_deletes_the_garbage_of_a_swap_and_waits_for_no_writer(tmp_path):
    services = build_services(tmp_path)
    kb = services.kbs.open(KB)
    doc = _doc(services, "security-policy.html")
    old = make_chunks()[3:5]
    new = [replace(old[0], id="passwords-v2", text="Passwords need sixteen characters now.")]
    kb.write(new, _vectors(services, new))
    services.catalog.mark_indexed(doc, ["passwords-v2"], garbage=doc.chunk_ids)  # killed before the old ids went
    assert not services.kbs.check(KB).ok
    with held_by_another_thread(services.kbs, KB), pytest.raises(Busy):
        repair(services.kbs, KB)
    done = repair(services.kbs, KB)
    assert done.garbage_deleted == 2 and done.after.ok
    assert services.catalog.docs_with_garbage(KB) == []
    assert {"passwords", "vpn"}.isdisjoint(kb.store.ids(kb.collection) | kb.lexical.ids())
