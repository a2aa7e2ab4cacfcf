"""The chunk edits applied to a document's fresh chunks at re-ingest (rag/chunk_edits.py), without
stores: which chunks an edit replaces, what becomes of their generated-question vectors, the added
chunks, keep and drop, and what keywords and questions add to what is embedded and matched."""

from __future__ import annotations

from rag.adapters.bm25 import chunk_tokens
from rag.catalog import DocRecord
from rag.chunk_edits import DROP, KEEP, ChunkEdit, NewChunk, curated, manual_chunk, reapply
from rag.ids import edit_key_for
from rag.text import tokenize
from rag.types import Chunk

DOC = DocRecord("kb", "d1", "a.md", "/docs", "h2", 1.0, 10, "A", "md", {"team": "hr"}, "recursive", "pending", [], [],
                0.0)


def chunk(cid: str, text: str, start: int = 0, **kw) -> Chunk:
    return Chunk(id=cid, kb="kb", doc_id="d1", source="a.md", text=text, start=start, end=start + len(text), **kw)


def edit(base: str, **kw) -> ChunkEdit:
    return ChunkEdit("kb", "d1", edit_key_for(base), base, None, **kw)


FRESH = [chunk("c1", "alpha text"), chunk("c2", "beta text", 20),
         chunk("c2#q0", "beta text", 20, parent_id="c2", kind="question", embed_text="what is beta?")]


def test_an_edit_replaces_its_chunk_and_drops_the_old_questions_vectors():
    out = reapply([edit("beta text", text="beta, corrected")], FRESH, DOC, changed=False, mode=DROP)
    assert [c.text for c in out.chunks] == ["alpha text", "beta, corrected"]  # c2#q0 described the old text
    assert out.chunks[1].id not in ("c2",) and out.chunks[1].edit_key == edit_key_for("beta text")
    assert (out.kept, out.dropped, out.disabled_ids) == (1, [], [])


def test_disabled_only_keeps_the_chunk_and_its_id():
    out = reapply([edit("alpha text", disabled=True)], FRESH, DOC, changed=True, mode=KEEP)
    assert [c.id for c in out.chunks] == ["c1", "c2", "c2#q0"] and out.disabled_ids == ["c1"]


def test_a_changed_file_drops_every_edit_with_drop_and_the_vanished_ones_with_keep():
    added = NewChunk(question="Why?", answer="Because.").edit("kb", "d1")
    edits = [edit("beta text", text="b"), edit("gone text", text="g"), added]
    dropped = reapply(edits, FRESH, DOC, changed=True, mode=DROP)
    assert dropped.chunks == FRESH and sorted(dropped.dropped) == sorted(e.key for e in edits)
    kept = reapply(edits, FRESH, DOC, changed=True, mode=KEEP)
    assert kept.kept == 2 and kept.dropped == [edit_key_for("gone text")]
    qa = next(c for c in kept.chunks if c.edit_key == added.key)
    assert qa.kind == "qa" and qa.text == "Q: Why?\nA: Because." and qa.embed_text == "Why?" and qa.tags == DOC.tags


def test_keywords_and_questions_are_embedded_and_matched_with_the_text():
    with_terms = curated(FRESH[0], edit("alpha text", keywords=("flamingo",), questions=("Where is alpha?",)))
    assert with_terms.text == "alpha text" and with_terms.embed_text == "Where is alpha?\nflamingo\n\nalpha text"
    assert chunk_tokens(with_terms).count("alpha") == 2 and tokenize("flamingo")[0] in chunk_tokens(with_terms)
    cleared = curated(FRESH[0], edit("alpha text"))
    assert cleared is FRESH[0]
    qa = manual_chunk(DOC, NewChunk(question="Boil milk?", answer="No.").edit("kb", "d1"))
    tagged = manual_chunk(DOC, ChunkEdit("kb", "d1", qa.edit_key, "", "Boil milk?", qa.text, keywords=("lactose",),
                                         manual=True))
    assert tagged.embed_text == "lactose\nBoil milk?" and tokenize("lactose")[0] in chunk_tokens(tagged)
    assert tagged.id != qa.id
