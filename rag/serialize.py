"""Results as plain JSON types, for the CLI's --json, the REST API and eval. The shapes are the
API's response bodies (`api/schemas.py`); prompt packing lives in `rag.generation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag.citations import mark_attributed
from rag.text import split_sentences
from rag.types import Answer, Citation, Hit, Source

def snippet(text: str, limit: int = 240) -> str:
    """The start of a text, cut after a sentence end (or a word) near `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = max((e for _, e in split_sentences(text[:limit]) if e >= limit // 2 and text[e - 1] in ".!?。！？;；"),
              default=0)
    if not cut:
        cut = text.rfind(" ", 0, limit) if " " in text[:limit] else limit
        return text[:cut].rstrip() + "…"
    return text[:cut]


def source_to_dict(source: Source, citations: Sequence[Citation] | None = None) -> dict[str, Any]:
    data = {"number": source.number, "chunk_id": source.chunk_id, "doc_id": source.doc_id,
            "document": source.source, "title": source.title, "section_path": list(source.section_path),
            "section": " > ".join(source.section_path), "page": source.page, "start": source.start,
            "end": source.end, "snippet": snippet(source.text), "text": source.text, "score": source.score,
            "rerank_score": source.rerank_score, "ocr": source.ocr, "ocr_confidence": source.ocr_confidence}
    data["pages"] = list(dict.fromkeys(page for page, _ in source.pages))  # every page the source covers
    if citations is not None:
        cited = [c for c in citations if c.source_number == source.number]
        data["cited"] = bool(cited)
        # a source over a page break is shown at the page its first cited sentence is on
        data["page"] = next((c.page for c in cited if c.page is not None), source.page)
    return data


def citation_to_dict(citation: Citation, sources: Sequence[Source]) -> dict[str, Any]:
    data: dict[str, Any] = {"number": citation.number, "source_number": citation.source_number,
                            "chunk_id": citation.chunk_id, "sentence": citation.sentence,
                            "sentence_start": citation.sentence_start, "sentence_end": citation.sentence_end,
                            "support": citation.support, "supported": citation.supported,
                            "origin": citation.origin}
    source = next((s for s in sources if s.number == citation.source_number), None)
    if source is not None:
        data.update(document=source.source, title=source.title, section=" > ".join(source.section_path),
                    page=citation.page if citation.page is not None else source.page, start=source.start, end=source.end, snippet=snippet(source.text))
    return data


def hit_to_dict(hit: Hit) -> dict[str, Any]:
    c = hit.chunk
    return {"chunk_id": c.id, "doc_id": c.doc_id, "document": c.source, "title": c.title,
            "section_path": list(c.section_path), "page": c.page, "start": c.start, "end": c.end,
            "kind": c.kind, "tags": dict(c.tags), "text": c.text, "score": hit.score, "rerank_score": hit.rerank_score,
            "ocr": c.ocr, "ocr_confidence": c.ocr_confidence,
            "provenance": [{"list": p.list_name, "variant": p.variant, "rank": p.rank, "score": p.score}
                           for p in hit.provenance]}


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    """Everything in an Answer as plain JSON types; timings in seconds."""
    return {"question": answer.question, "answer": answer.answer, "refused": answer.refused,
            # the answer with markers added for the claims the verifier attributed (for display)
            "answer_with_citations": mark_attributed(answer.answer, answer.citations),
            "standalone_question": answer.standalone_question, "query_variants": list(answer.query_variants),
            "sources": [source_to_dict(s, answer.citations) for s in answer.sources],
            "citations": [citation_to_dict(c, answer.sources) for c in answer.citations],
            "hits": [hit_to_dict(h) for h in answer.hits],
            "timings": {k: round(v, 6) for k, v in answer.timings.items()},
            "rerank_enabled": answer.rerank_enabled, "model": answer.model, "info": answer.info}
