"""Questions about the collection itself, answered from the catalog instead of by retrieval:
"How many documents are in the knowledge base?", "Which files mention the VPN?", "When was the
leave policy last updated?", "知识库里有多少篇文章？", "哪些文件提到了VPN".

Detection is by rules (English and Chinese) and conservative: a pattern must name the collection
("documents", "files", "knowledge base", 文档, 知识库 ...) and a "when was X updated" question is
routed only when X names a document; anything else goes through normal retrieval. The numbers,
names and dates come from the catalog and the text is templated: no LLM writes it. Each listed
document is a numbered source (a chunk of it: the one mentioning the term, or its first), so the
answer's `[n]` markers are ordinary citations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rag.catalog import DocRecord
from rag.citations import extract_citations
from rag.kb import KnowledgeBase
from rag.text import tokenize
from rag.types import Chunk, Citation, Filter, Source

MAX_LISTED = 20  # documents named (and cited) in one answer; the count is always exact
_DOCS_EN = r"(?:documents?|docs?|files?|articles?|pdfs?|records?)"
_KB_EN = r"(?:knowledge ?base|collection|\bkb\b|index|corpus|library|database|system)"
_DOCS_ZH = r"(?:文章|文档|文件|资料|材料)"
_KB_ZH = r"(?:知识库|资料库|文档库|库里|库中|系统里|系统中)"

_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("count", re.compile(rf"^how many {_DOCS_EN}\b.*(?:{_KB_EN}|\b(?:are there|do you have|have you got|"
                         rf"are (?:stored|indexed|loaded)|did (?:i|we) (?:upload|add|ingest)))\b.*$")),
    ("count", re.compile(rf"^(?:what is|what's) the (?:number|count) of {_DOCS_EN}\b.*$")),
    ("count", re.compile(rf"{_KB_ZH}.{{0,8}}(?:多少|几)(?:篇|个|份|本)?{_DOCS_ZH}")),
    ("count", re.compile(rf"^(?:一共|总共|共)?有(?:多少|几)(?:篇|个|份|本){_DOCS_ZH}[？?]?$")),
    ("list", re.compile(rf"^(?:please )?(?:list|show)(?: me)? (?:all )?(?:the |your )?{_DOCS_EN}"
                        rf"(?: (?:in|of) (?:the |this |your )?{_KB_EN})?[.?!]?$")),
    ("list", re.compile(rf"^what {_DOCS_EN} (?:are|do you have) (?:there|in (?:the |this |your )?{_KB_EN})[.?!]?$")),
    ("list", re.compile(rf"^(?:{_KB_ZH}.{{0,4}})?有哪些{_DOCS_ZH}[？?]?$|^列出(?:所有|全部)?的?{_DOCS_ZH}")),
    ("mention", re.compile(rf"^(?:which|what) {_DOCS_EN}(?: \w+)? (?:mention|mentions|contain|contains|refer to|"
                           rf"refers to|talk about|talks about|discuss|discusses|include|includes)\s+"
                           rf"(?:the (?:word |term )?|a |an )?(?P<term>.+?)[\s?.!]*$")),
    ("mention", re.compile(rf"^哪些{_DOCS_ZH}(?:里|中)?(?:提到|提及|包含|含有|涉及|讲到|说到|出现)了?(?P<term>.+?)[\s？?。]*$")),
    ("latest", re.compile(rf"^which {_DOCS_EN} (?:was|were|is) (?:the )?(?:most recently|last|latest) "
                          r"(?:updated|modified|changed|added)[.?!]?$")),
    ("latest", re.compile(rf"^最近(?:更新|修改|添加)的?(?:是)?(?:哪个|哪篇|哪些)?{_DOCS_ZH}")),
    ("updated", re.compile(r"^when (?:was|were|did) (?:the )?(?P<subject>.+?) (?:last )?(?:get )?"
                           r"(?:updated|modified|changed|edited|revised)(?: last)?[.?!]?$")),
    ("updated", re.compile(r"^(?P<subject>.+?)(?:是)?(?:什么时候|何时|哪天)(?:最后)?(?:一次)?(?:更新|修改)的?[？?]?$")),
]


@dataclass(frozen=True)
class CollectionQuestion:
    intent: str  # "count" | "list" | "mention" | "latest" | "updated"
    term: str = ""  # what the documents must mention, or the document the question names


def detect(question: str) -> CollectionQuestion | None:
    """The collection question this is, or None for an ordinary question."""
    text = " ".join(question.strip().split())
    lowered = text.lower()
    for intent, pattern in _RULES:
        match = pattern.search(lowered)
        if match is None:
            continue
        groups = match.groupdict()
        term = (groups.get("term") or groups.get("subject") or "").strip(" \"'“”‘’「」《》")
        if intent in ("mention", "updated") and not term:
            continue
        if intent == "mention":  # keep the term as written (case) for display
            start = match.start("term")
            term = text[start:start + len(match.group("term"))].strip(" \"'“”‘’「」《》")
        return CollectionQuestion(intent, term)
    return None


@dataclass
class CollectionAnswer:
    text: str
    sources: list[Source]
    citations: list[Citation]
    info: dict[str, Any]


def answer(kb: KnowledgeBase, q: CollectionQuestion, lang: str, flt: Filter | None = None) -> CollectionAnswer | None:
    """The catalog's answer, or None when the question turns out not to be about the collection
    ("when was X updated" where X names no document)."""
    docs = [d for d in kb.catalog.list_docs(kb.name, state="indexed") if flt is None or flt.matches(_payload(d))]
    zh = lang == "zh"
    info: dict[str, Any] = {"intent": q.intent, "documents_total": len(docs)}
    if q.intent in ("count", "list"):
        listed = docs
        head = (f"知识库 {kb.name} 中共有 {len(docs)} 篇文档" if zh else
                f"The knowledge base {kb.name} holds {len(docs)} document{'s' if len(docs) != 1 else ''}")
        chunks = _first_chunks(kb, listed[:MAX_LISTED])
    elif q.intent == "mention":
        chunks = _mentioning(kb, docs, q.term)
        listed = [d for d in docs if d.doc_id in chunks]
        info.update(term=q.term, documents=len(listed))
        if not listed:
            text = (f"知识库中没有文档提到“{q.term}”。" if zh else f"No document in the knowledge base mentions “{q.term}”.")
            return CollectionAnswer(text, [], [], info)
        head = (f"有 {len(listed)} 篇文档提到了“{q.term}”" if zh else
                f"{len(listed)} document{'s' if len(listed) != 1 else ''} mention{'' if len(listed) != 1 else 's'} "
                f"“{q.term}”")
    elif q.intent == "latest":
        listed = sorted(docs, key=lambda d: d.mtime, reverse=True)[:1]
        if not listed:
            return CollectionAnswer("知识库中没有文档。" if zh else "The knowledge base holds no documents.", [], [], info)
        doc = listed[0]
        head = ("最近修改的文档是" if zh else "The most recently modified document is")
        chunks = _first_chunks(kb, listed)
        return _build(kb, f"{head} {doc.source}，修改于 {_day(doc.mtime)}" if zh else
                      f"{head} {doc.source}, modified on {_day(doc.mtime)}", listed, chunks, info, zh, dates=False)
    else:  # updated
        doc = _named(docs, q.term)
        if doc is None:
            return None
        listed, chunks = [doc], _first_chunks(kb, [doc])
        info["document"] = doc.source
        text = (f"{doc.source} 最后修改于 {_day(doc.mtime)}（UTC），于 {_day(doc.ingested_at)} 收入知识库" if zh else
                f"{doc.source} was last modified on {_day(doc.mtime)} (UTC) and indexed on {_day(doc.ingested_at)}")
        return _build(kb, text, listed, chunks, info, zh, dates=False)
    return _build(kb, head, listed, chunks, info, zh)


def _build(kb: KnowledgeBase, head: str, listed: list[DocRecord], chunks: dict[str, Chunk], info: dict[str, Any],
           zh: bool, dates: bool = True) -> CollectionAnswer:
    sources: list[Source] = []
    items: list[str] = []
    for doc in listed[:MAX_LISTED]:
        chunk = chunks.get(doc.doc_id)
        if chunk is None:
            continue
        number = len(sources) + 1
        sources.append(Source(number, chunk.id, doc.doc_id, doc.source, doc.title or chunk.title, chunk.section_path,
                              chunk.page, chunk.start, chunk.end, chunk.text, 1.0))
        detail = f"{_size(doc.size)}, {_day(doc.mtime)}" if dates else ""
        items.append(f"{doc.source}{f'（{detail}）' if zh and detail else f' ({detail})' if detail else ''} [{number}]")
    more = len(listed) - len(items)
    if len(listed) == 1 and not dates:
        text = f"{head} [1]{'。' if zh else '.'}" if sources else f"{head}{'。' if zh else '.'}"
    elif not items:
        text = f"{head}{'。' if zh else '.'}"
    else:
        sep = "、" if zh else ", "
        tail = (f"，另有 {more} 篇未列出" if zh else f", and {more} more") if more > 0 else ""
        text = f"{head}{'：' if zh else ': '}{sep.join(items)}{tail}{'。' if zh else '.'}"
    info["listed"] = [s.source for s in sources]
    citations = extract_citations(text, sources)
    for c in citations:
        c.support, c.supported, c.origin = 1.0, True, "catalog"
    return CollectionAnswer(text, sources, citations, info)


def _payload(doc: DocRecord) -> dict[str, Any]:
    return {"source": doc.source, "doc_id": doc.doc_id, "mtime": doc.mtime,
            "tags": [f"{k}={v}" for k, v in sorted(doc.tags.items())]}


def _first_chunks(kb: KnowledgeBase, docs: list[DocRecord]) -> dict[str, Chunk]:
    """The first chunk (lowest offset among the stored ids) of each document, by doc id."""
    ids = [cid for d in docs for cid in d.chunk_ids[:3]]
    out: dict[str, Chunk] = {}
    for chunk in sorted(kb.get_chunks(ids).values(), key=lambda c: c.start):
        out.setdefault(chunk.doc_id, chunk)
    return out


def _mentioning(kb: KnowledgeBase, docs: list[DocRecord], term: str) -> dict[str, Chunk]:
    """doc id -> a chunk whose text contains `term` (case-insensitive). BM25 finds the candidates;
    only a literal occurrence counts."""
    allowed = {d.doc_id for d in docs}
    needle = " ".join(term.lower().split())
    candidates = kb.search_bm25(term, limit=1000)
    chunks = kb.get_chunks([c.chunk_id for c in candidates])
    out: dict[str, Chunk] = {}
    for item in candidates:
        chunk = chunks.get(item.chunk_id)
        if chunk and chunk.doc_id in allowed and chunk.doc_id not in out \
                and needle in " ".join(chunk.text.lower().split()):
            out[chunk.doc_id] = chunk
    for d in docs:  # the name or title mentions it: cite the document's first chunk
        if d.doc_id not in out and needle in f"{d.source} {d.title}".lower():
            out.update(_first_chunks(kb, [d]))
    return out


def _named(docs: list[DocRecord], subject: str) -> DocRecord | None:
    """The document whose name or title holds most of the subject's words (at least half), or None."""
    words = set(tokenize(subject))
    if not words:
        return None
    best, best_share = None, 0.0
    for d in docs:
        name = set(tokenize(f"{d.title} {re.sub(r'[_./-]', ' ', d.source)}"))
        share = len(words & name) / len(words)
        if share > best_share or (share == best_share and best is not None and d.mtime > best.mtime):
            best, best_share = d, share
    return best if best_share >= 0.5 else None


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
