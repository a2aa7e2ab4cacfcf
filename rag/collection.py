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

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any

from rag.catalog import DocRecord
from rag.citations import extract_citations
from rag.collection_detect import CollectionQuestion, detect, file_type
from rag.kb import KnowledgeBase
from rag.text import tokenize
from rag.types import Chunk, Citation, Filter, Source

__all__ = ["CollectionAnswer", "CollectionQuestion", "answer", "detect"]

MAX_LISTED = 20  # documents named (and cited) in one answer; the count is always exact
_GENERIC_WORDS = "document doc file article record 文档 文件 文章 资料"  # they name no document
_PERIODS = {"today": ("today", "今天"), "yesterday": ("yesterday", "昨天"), "week": ("this week", "本周"),
            "lastweek": ("last week", "上周"), "month": ("this month", "本月"), "lastmonth": ("last month", "上个月"),
            "year": ("this year", "今年"), "lastyear": ("last year", "去年")}
When = Callable[[DocRecord], float]


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
    if q.intent == "updated":
        doc = _named(docs, q.term)
        if doc is None:
            return None
        info["document"] = doc.source
        text = (f"{doc.source} 最后修改于 {_day(doc.mtime)}（UTC），于 {_day(doc.ingested_at)} 收入知识库" if zh else
                f"{doc.source} was last modified on {_day(doc.mtime)} (UTC) and indexed on {_day(doc.ingested_at)}")
        return _build(kb, text, [doc], _first_chunks(kb, [doc]), info, zh, dates=False)
    if q.intent == "latest":
        return _latest(kb, docs, q, info, zh)
    if q.intent == "mention":
        chunks = _mentioning(kb, docs, q.term)
        listed = [d for d in docs if d.doc_id in chunks]
        info.update(term=q.term, documents=len(listed))
        head = (f"有 {len(listed)} 篇文档提到了“{q.term}”" if zh else
                f"{_n_docs(len(listed))} mention{'' if len(listed) != 1 else 's'} “{q.term}”")
        empty = f"知识库中没有文档提到“{q.term}”。" if zh else f"No document in the knowledge base mentions “{q.term}”."
        return _build(kb, head, listed, chunks, info, zh) if listed else CollectionAnswer(empty, [], [], info)
    when: When = _indexed if q.added else _modified
    if q.intent == "recent":
        start, end = _bounds(q.period, time.time())
        inside = [d for d in docs if start <= when(d) and (end is None or when(d) < end)]
        listed = sorted(inside, key=when, reverse=True)
        if end is not None:
            span = f"{_day(start)} – {_day(end - 1)}"
        else:
            span = f"{_day(start)} 起" if zh else f"since {_day(start)}"
        en_label, zh_label = _PERIODS.get(q.period, (f"in the last {q.period[5:]} days", f"最近 {q.period[5:]} 天"))
        verb_en, verb_zh = ("added to the knowledge base", "收入知识库") if q.added else ("modified", "修改")
        info.update(period=q.period, since=_day(start), date="indexed" if q.added else "modified",
                    documents=len(listed))
        head = (f"{zh_label}（{span}，UTC）{verb_zh}的文档有 {len(listed)} 篇" if zh else
                f"{_n_docs(len(listed))} {'was' if len(listed) == 1 else 'were'} {verb_en} {en_label} ({span}, UTC)")
        empty = (f"{zh_label}（{span}，UTC）没有{verb_zh}的文档。" if zh else
                 f"No document was {verb_en} {en_label} ({span}, UTC).")
    elif q.intent == "type":
        label, formats = file_type(q.term)
        listed = [d for d in docs if d.format.lstrip(".").lower() in formats]
        info.update(formats=list(formats), documents=len(listed))
        head = (f"知识库 {kb.name} 中共有 {len(listed)} 篇 {label} 文档" if zh else
                f"The knowledge base {kb.name} holds {len(listed)} {label} document{'s' if len(listed) != 1 else ''}")
        empty = f"知识库 {kb.name} 中没有 {label} 文档。" if zh else f"The knowledge base {kb.name} holds no {label} documents."
    elif q.intent == "tag":
        listed = [d for d in docs if _tagged(d, q.term)]
        info.update(tag=q.term, documents=len(listed))
        head = (f"有 {len(listed)} 篇文档带有标签 {q.term}" if zh else
                f"{_n_docs(len(listed))} {'is' if len(listed) == 1 else 'are'} tagged {q.term}")
        empty = f"知识库中没有带有标签 {q.term} 的文档。" if zh else f"No document in the knowledge base is tagged {q.term}."
    elif q.intent == "named":
        needle = " ".join(q.term.lower().split())
        listed = [d for d in docs if needle in f"{d.source} {d.title}".lower()]
        info.update(term=q.term, documents=len(listed))
        head = (f"名称或标题包含“{q.term}”的文档有 {len(listed)} 篇" if zh else
                f"{_n_docs(len(listed))} {'has' if len(listed) == 1 else 'have'} “{q.term}” in "
                f"{'its' if len(listed) == 1 else 'their'} name or title")
        empty = (f"知识库中没有名称或标题包含“{q.term}”的文档。" if zh else
                 f"No document in the knowledge base has “{q.term}” in its name or title.")
    else:  # count, list
        listed, empty = docs, ""
        head = (f"知识库 {kb.name} 中共有 {len(docs)} 篇文档" if zh else
                f"The knowledge base {kb.name} holds {_n_docs(len(docs))}")
    if not listed and empty:
        return CollectionAnswer(empty, [], [], info)
    return _build(kb, head, listed, _first_chunks(kb, listed[:MAX_LISTED]), info, zh, when=when)


def _latest(kb: KnowledgeBase, docs: list[DocRecord], q: CollectionQuestion, info: dict[str, Any],
            zh: bool) -> CollectionAnswer:
    """The newest (or oldest) documents by modified time, or by indexing time for "most recently added"."""
    when: When = _indexed if q.added else _modified
    listed = sorted(docs, key=when, reverse=not q.oldest)[:max(1, q.limit)]
    info.update(order="oldest" if q.oldest else "newest", date="indexed" if q.added else "modified")
    if not listed:
        return CollectionAnswer("知识库中没有文档。" if zh else "The knowledge base holds no documents.", [], [], info)
    chunks = _first_chunks(kb, listed)
    if len(listed) == 1:
        doc = listed[0]
        what_zh, what_en = ("收入知识库", "indexed") if q.added else ("修改", "modified")
        if zh:
            head = f"{'最早' if q.oldest else '最近'}{what_zh}的文档是 {doc.source}，{what_zh}于 {_day(when(doc))}"
        else:
            adjective = ("least" if q.oldest else "most") + " recently " + ("added" if q.added else "modified")
            head = f"The {adjective} document is {doc.source}, {what_en} on {_day(when(doc))}"
        return _build(kb, head, listed, chunks, info, zh, dates=False)
    what_zh, what_en = ("收入知识库时间", "added") if q.added else ("修改时间", "modified")
    head = (f"{what_zh}{'最早' if q.oldest else '最近'}的 {len(listed)} 篇文档（{'从旧到新' if q.oldest else '从新到旧'}）"
            if zh else f"The {len(listed)} {'least' if q.oldest else 'most'} recently {what_en} documents "
                       f"({'oldest' if q.oldest else 'newest'} first)")
    return _build(kb, head, listed, chunks, info, zh, when=when)


def _build(kb: KnowledgeBase, head: str, listed: list[DocRecord], chunks: dict[str, Chunk], info: dict[str, Any],
           zh: bool, dates: bool = True, when: When | None = None) -> CollectionAnswer:
    sources: list[Source] = []
    items: list[str] = []
    for doc in listed[:MAX_LISTED]:
        chunk = chunks.get(doc.doc_id)
        if chunk is None:
            continue
        number = len(sources) + 1
        sources.append(Source(number, chunk.id, doc.doc_id, doc.source, doc.title or chunk.title, chunk.section_path,
                              chunk.page, chunk.start, chunk.end, chunk.text, 1.0))
        detail = f"{_size(doc.size)}, {_day((when or _modified)(doc))}" if dates else ""
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
    """The document the subject names: its file name, stem or title as written, else the one whose
    name and title hold the subject's distinctive words. Words weigh by their rarity among the
    catalog's names (idf: "policy" in four names weighs less than "leave" in one); the subject's rarest
    word must be among them and the matched words must weigh at least half. A word no name holds is the
    rarest of all, so "the leave policy" names no document where none is called leave. Ties go to the
    most recently modified (the current version of remote-work-policy-v1/-v2)."""
    key = " ".join(subject.lower().split())
    exact = [d for d in docs if key in (d.source.lower(), PurePath(d.source).stem.lower(), d.title.lower())]
    if exact:
        return max(exact, key=_modified)
    words = set(_name_words(subject)) - set(_name_words(_GENERIC_WORDS))
    if not words:
        return None
    names = {d.doc_id: set(_name_words(f"{d.title} {d.source}")) for d in docs}
    df = Counter(w for name in names.values() for w in name if w in words)
    idf = {w: math.log((len(docs) + 1) / (df[w] + 0.5)) for w in words}
    rarest = max(idf.values())
    distinctive = {w for w, v in idf.items() if v >= rarest - 1e-9}
    best, best_key = None, (0.0, 0.0)
    for d in docs:
        hit = words & names[d.doc_id]
        share = sum(idf[w] for w in hit) / sum(idf.values())
        if hit & distinctive and share >= 0.5 and (share, d.mtime) > best_key:
            best, best_key = d, (share, d.mtime)
    return best


def _name_words(text: str) -> list[str]:
    """Tokens of a name, its separators (remote-work-policy-v1.md) read as spaces."""
    return tokenize(re.sub(r"[_./\\-]", " ", text))


def _tagged(doc: DocRecord, tag: str) -> bool:
    """`key=value` matches that tag; a bare word matches a tag's key or value (case-insensitive)."""
    key, sep, value = (p.strip().lower() for p in tag.partition("="))
    tags = {k.lower(): v.lower() for k, v in doc.tags.items()}
    if sep:
        return tags.get(key) == value
    return key in tags or key in tags.values()


def _bounds(period: str, now: float) -> tuple[float, float | None]:
    """[start, end) of a period (UTC calendar days and weeks from Monday); end None = until now."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    week = today - timedelta(days=today.weekday())
    month, year = today.replace(day=1), today.replace(month=1, day=1)
    spans = {"today": (today, None), "yesterday": (today - timedelta(days=1), today), "week": (week, None),
             "lastweek": (week - timedelta(days=7), week), "month": (month, None),
             "lastmonth": ((month - timedelta(days=1)).replace(day=1), month), "year": (year, None),
             "lastyear": (year.replace(year=year.year - 1), year)}
    if period in spans:
        start, end = spans[period]
        return start.timestamp(), end.timestamp() if end is not None else None
    return now - int(period.removeprefix("days:") or 1) * 86400, None


def _modified(doc: DocRecord) -> float:
    return doc.mtime


def _indexed(doc: DocRecord) -> float:
    return doc.ingested_at


def _n_docs(n: int) -> str:
    return f"{n} document{'s' if n != 1 else ''}"


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
