"""Knowledge-base writes have one entry point (issue 32): the write lock is taken only through
`KnowledgeBases.writing` (which opens no store and resolves no model), and a document's states
(pending -> indexed, rolled back, deleting -> removed, garbage deleted) change only through
`KnowledgeBase` methods, on real stores and the hash embedder."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from rag.factory import Services
from rag.settings import Settings
from tests.unit.kb_fixtures import KB, build_services, make_chunks

ROOT = Path(__file__).resolve().parents[3]
# the only modules that may take the lock's mechanism or change a document's state in the catalog
LOCK_HOMES = {"rag/kb.py", "rag/kb_lifecycle.py", "rag/locks.py", "rag/factory.py"}
STATE_HOMES = {"rag/kb.py", "rag/catalog.py"}
LOCK_CALL = re.compile(r"write_locks|\.hold\(|\.locks\.hold")
STATE_CALL = re.compile(r"\.(mark_pending|mark_indexed|mark_many_indexed|clear_garbage|roll_back_pending|"
                        r"mark_deleting|remove_doc|save_chunk_edit)\(")


def _sources() -> dict[str, str]:
    found = {}
    for folder in ("rag", "api", "cli", "ingest", "eval", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return found


def test_the_write_lock_and_the_document_states_have_one_home():
    sources = _sources()
    lock_calls = [f"{name}: {m.group(0)}" for name, text in sources.items() if name not in LOCK_HOMES
                  for m in LOCK_CALL.finditer(text)]
    state_calls = [f"{name}: {m.group(0)}" for name, text in sources.items() if name not in STATE_HOMES
                   for m in STATE_CALL.finditer(text)]
    assert lock_calls == [], "take the write lock with KnowledgeBases.writing(name)"
    assert state_calls == [], "change a document's state through a KnowledgeBase method"


def test_taking_the_write_lock_opens_no_store_and_resolves_no_model(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", embed_model="hash", vector_backend="edge")
    services = Services(settings)
    try:
        with services.kbs.writing(KB):
            assert "store" not in services.__dict__ and "embedder_resolution" not in services.__dict__
        assert services.kbs.store is services.store and services.kbs.embedder is services.embedder  # on first use
    finally:
        services.close()


def _vectors(services, chunks):
    return services.embedder.encode_corpus([c.match_text for c in chunks])


def test_a_document_goes_pending_then_live_and_its_old_chunks_go(tmp_path):
    services = build_services(tmp_path)
    kb = services.kbs.open(KB)
    old = services.catalog.find_doc_by_source(KB, "security-policy.html")
    new = [replace(c, id=f"{c.id}-v2", doc_hash="h2") for c in make_chunks() if c.source == old.source]
    record = replace(old, content_hash="h2", state="pending", chunk_ids=[], pending_ids=[])
    kb.begin_document(record, [c.id for c in new])
    assert kb.live_ids() >= {"passwords", "vpn"} and "passwords-v2" not in kb.live_ids()  # the old version is live
    removed = kb.finish_document(record, new, _vectors(services, new), set(old.chunk_ids))
    doc = services.catalog.find_doc_by_source(KB, old.source)
    assert removed == 2 and (doc.state, doc.chunk_ids, doc.pending_ids) == ("indexed", ["passwords-v2", "vpn-v2"], [])
    assert {"passwords-v2", "vpn-v2"} <= kb.live_ids() and not {"passwords", "vpn"} & kb.store.ids(kb.collection)
    assert kb.check().ok


def test_a_pending_document_rolls_back_to_its_version_or_goes(tmp_path):
    services = build_services(tmp_path)
    kb = services.kbs.open(KB)
    manual = services.catalog.find_doc_by_source(KB, "acme-x200-manual.pdf")
    new = [replace(make_chunks()[0], id="warranty-v2", text="Three years now.")]
    kb.begin_document(replace(manual, content_hash="h2"), [c.id for c in new])
    kb.write(new, _vectors(services, new))  # killed after the write, before the swap
    fresh = replace(new[0], id="fresh-1", doc_id="doc-fresh", source="fresh.md")
    kb.begin_document(replace(manual, doc_id="doc-fresh", source="fresh.md"), [fresh.id])
    kb.write([fresh], _vectors(services, [fresh]))
    pending = {d.source: d for d in services.catalog.list_docs(KB) if d.state == "pending"}
    assert kb.roll_back(pending["acme-x200-manual.pdf"]) is True  # back to the version it replaced
    assert kb.roll_back(pending["fresh.md"]) is False  # it had none: removed
    assert services.catalog.find_doc_by_source(KB, "fresh.md") is None
    assert services.catalog.find_doc_by_source(KB, "acme-x200-manual.pdf").chunk_ids == manual.chunk_ids
    assert kb.check().ok and not {"warranty-v2", "fresh-1"} & kb.store.ids(kb.collection)


def test_garbage_of_a_killed_swap_is_deleted(tmp_path):
    services = build_services(tmp_path)
    kb = services.kbs.open(KB)
    doc = services.catalog.find_doc_by_source(KB, "security-policy.html")
    services.catalog.mark_indexed(doc, ["passwords"], garbage=["vpn"])  # killed before `vpn` was deleted
    assert kb.delete_garbage(services.catalog.get_doc(KB, doc.doc_id)) == 1
    assert services.catalog.get_doc(KB, doc.doc_id).pending_ids == [] and kb.check().ok
