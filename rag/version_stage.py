"""Document versions at query time, one stage with two steps: `apply` is called by the retrieval
stage, `finish` by the pipeline.

`apply` (after reranking): of each version family (rag/versions.py) among the hits, the newest
version is used, or the version(s) the question names ("in the 2023 policy", "v1"). A hit from
another version of the family is replaced by the corresponding chunk of the used version (same
section when there is one, then the chunk sharing most words, figures masked), in the old hit's
place and with its scores; a replacement already among the hits is not repeated, and none is taken
from outside the request's filter (a filter naming the old file keeps it: that version is used). When the replaced
chunk states other figures than its replacement, the older version says something else on the
same thing, and the note says so. With `prefer_latest` off the hits are kept as they are.

`finish` (after checking): when the answer's sources hold several versions of one family (all
versions kept, or two named), each cited statement gets the version of the source(s) it cites
appended after its markers ("... two days [1]（考勤管理办法2023版，旧版本）。"), a deterministic
post-step from the citations (whose offsets move with the text). Then the note naming the
version used, only when a cited source belongs to a family ("(Version used: ...)"). In a stream the
note is the last token; the labels are in the `done` answer only."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from rag import versions
from rag.focus import figures
from rag.kb import KnowledgeBase
from rag.types import Chunk, Citation, Filter, Hit, Source
from rag.versions import Version

NAMED, NEWEST = "named in the question", "newest found"


@dataclass(frozen=True)
class FamilyUse:
    """What `apply` decided for one family met among the hits."""

    family: str
    used: tuple[Version, ...]
    dropped: tuple[Version, ...]  # versions among the hits that the answer does not use
    newest: Version
    size: int  # versions in the family
    named: bool  # the question named the used version(s)
    replaced: int = 0  # hits replaced by the corresponding chunk of the used version
    differs: tuple[str, ...] = ()  # sources of replaced chunks stating other figures than their replacement

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "used": [v.source for v in self.used],
                "dropped": [v.source for v in self.dropped], "newest": self.newest.source,
                "reason": NAMED if self.named else NEWEST, "versions": self.size, "replaced": self.replaced,
                "differs": list(self.differs)}


@dataclass
class VersionDecision:
    hits: list[Hit]
    uses: list[FamilyUse] = field(default_factory=list)  # empty when versions were not preferred
    of_doc: dict[str, Version] = field(default_factory=dict)  # doc id -> its version, every family member

    def info(self) -> list[dict[str, Any]]:
        return [u.as_dict() for u in self.uses]


class VersionStage:
    def __init__(self, min_overlap: float) -> None:
        self.min_overlap = min_overlap

    def apply(self, knowledge: KnowledgeBase, hits: list[Hit], question: str, prefer_latest: bool,
              flt: Filter | None = None) -> VersionDecision:
        """The hits with other versions replaced by the used one (none outside the request's filter)."""
        of_doc = versions.families(knowledge, self.min_overlap)
        if not of_doc or not prefer_latest:
            return VersionDecision(hits, [], of_doc)
        present: dict[str, list[Version]] = {}
        for hit in hits:
            v = of_doc.get(hit.chunk.doc_id)
            if v is not None and v not in present.setdefault(v.family, []):
                present[v.family].append(v)
        if not present:
            return VersionDecision(hits, [], of_doc)
        members = {f: sorted((v for v in of_doc.values() if v.family == f), key=lambda v: v.order) for f in present}
        chosen = {f: [v for v in members[f] if names(v, question)] for f in present}
        target = {f: (chosen[f] or [members[f][-1]])[-1] for f in present}
        keep = {v.doc_id for f in present for v in chosen[f] or [target[f]]}
        chunks_of: dict[str, list[Chunk]] = {}
        replaced: dict[str, int] = {}
        differs: dict[str, list[str]] = {}
        kept_anyway: set[str] = set()
        out: list[Hit] = []
        for hit in hits:
            v = of_doc.get(hit.chunk.doc_id)
            if v is None or v.doc_id in keep:
                out.append(hit)
                continue
            to = target[v.family]
            if to.doc_id not in chunks_of:
                chunks_of[to.doc_id] = [c for c in _doc_chunks(knowledge, to.doc_id)
                                        if flt is None or flt.matches(c.payload())]
            match = best_match(hit.chunk, chunks_of[to.doc_id], question)
            if match is None:  # the used version is outside the filter: this version is the one used
                kept_anyway.add(v.doc_id)
                out.append(hit)
                continue
            out.append(replace(hit, chunk=match))
            replaced[v.family] = replaced.get(v.family, 0) + 1
            if figures(hit.chunk.text) != figures(match.text) and v.source not in differs.get(v.family, []):
                differs.setdefault(v.family, []).append(v.source)
        seen: set[str] = set()
        out = [h for h in out if not (h.chunk.id in seen or seen.add(h.chunk.id))]
        uses = []
        for f, found in present.items():
            used = tuple(v for v in members[f] if v.doc_id in keep | kept_anyway)
            uses.append(FamilyUse(f, used, tuple(v for v in found if v not in used), members[f][-1],
                                  len(members[f]), bool(chosen[f]), replaced.get(f, 0), tuple(differs.get(f, []))))
        return VersionDecision(out, uses, of_doc)

    def finish(self, text: str, citations: list[Citation], sources: Sequence[Source], decision: VersionDecision | None,
               lang: str) -> tuple[str, list[Citation], str]:
        """The answer with each cited statement labelled with its version (when the sources hold
        several versions of a family), its citations moved along, and the note ("" for none)."""
        if decision is None or not decision.of_doc:
            return text, citations, ""
        by_number = {s.number: s for s in sources}
        cited_docs = {by_number[c.source_number].doc_id for c in citations if c.source_number in by_number}
        uses = [u for u in decision.uses if cited_docs & {v.doc_id for v in u.used}]
        text, citations = _label(text, citations, by_number, decision.of_doc, lang)
        return text, citations, note(uses, lang)


def names(v: Version, question: str) -> bool:
    """Whether the question names this version: its marker ("2023", "v2"), or the year of its date."""
    asked = question.lower()
    label = v.label.lower()
    if not label:
        return False
    if re.fullmatch(r"(?:19|20)\d\d(?:[-_.]\d{1,2})*", label):
        return re.search(rf"(?<!\d){label[:4]}(?!\d)", asked) is not None
    number = re.sub(r"^\D+", "", label)
    return label in asked or bool(number) and re.search(rf"\bversion\s*{re.escape(number)}\b", asked) is not None


def best_match(old: Chunk, candidates: Sequence[Chunk], question: str) -> Chunk | None:
    """The chunk of another version that corresponds to `old`: of the same section when one is,
    sharing most words with it (figures masked), then with the question."""
    if not candidates:
        return None
    same = [c for c in candidates if old.section_path and c.section_path == old.section_path]
    words, asked = versions.shingles(old.text, 1), versions.shingles(question, 1)
    return max(same or candidates, key=lambda c: (versions.jaccard(words, w := versions.shingles(c.text, 1)),
                                                   len(asked & w), -c.start))


def _doc_chunks(knowledge: KnowledgeBase, doc_id: str) -> list[Chunk]:
    doc = knowledge.catalog.get_doc(knowledge.name, doc_id)
    return [] if doc is None else sorted(knowledge.get_chunks(doc.chunk_ids).values(), key=lambda c: c.start)


def version_label(v: Version, lang: str) -> str:
    """"考勤管理办法2023版，旧版本" / "expense rules, effective 2022-03-01, older version"."""
    stem = PurePosixPath(v.source).stem
    dated = v.label and v.label not in stem
    if lang == "zh":
        return f"{stem}{f'，{v.label} 起施行' if dated else ''}，{'最新版本' if v.newest else '旧版本'}"
    return f"{stem}{f', effective {v.label}' if dated else ''}, {'newest version' if v.newest else 'older version'}"


_END = re.compile(r"[\s.。!?！？;；]*$")


def _label(text: str, citations: list[Citation], by_number: dict[int, Source], of_doc: dict[str, Version],
           lang: str) -> tuple[str, list[Citation]]:
    in_sources: dict[str, set[str]] = {}
    for s in by_number.values():
        if s.doc_id in of_doc:
            in_sources.setdefault(of_doc[s.doc_id].family, set()).add(s.doc_id)
    mixed = {f for f, ids in in_sources.items() if len(ids) > 1}
    if not mixed:
        return text, citations
    spans: dict[tuple[int, int], list[Version]] = {}
    for c in citations:
        source = by_number.get(c.source_number)
        v = of_doc.get(source.doc_id) if source is not None else None
        if v is not None and v.family in mixed and v not in spans.setdefault((c.sentence_start, c.sentence_end), []):
            spans[(c.sentence_start, c.sentence_end)].append(v)
    inserts: list[tuple[int, str]] = []
    for (start, end), found in spans.items():
        if not found:
            continue
        body = text[start:end]
        at = start + len(_END.sub("", body))
        labels = "; ".join(version_label(v, lang) for v in sorted(found, key=lambda v: v.order))
        inserts.append((at, f"（{labels}）" if lang == "zh" else f" ({labels})"))
    inserts.sort()
    for at, piece in reversed(inserts):
        text = text[:at] + piece + text[at:]

    def moved(x: int, inclusive: bool) -> int:
        return x + sum(len(p) for at, p in inserts if at < x or inclusive and at == x)

    return text, [replace(c, sentence_start=moved(c.sentence_start, False), sentence_end=moved(c.sentence_end, True))
                  for c in citations]


def note(uses: Sequence[FamilyUse], lang: str) -> str:
    """One line per family saying which version(s) the answer used, and which older version
    retrieved states other figures; "" for none."""
    parts = []
    for u in uses:
        used = ", ".join(v.source for v in u.used)
        newest = u.used == (u.newest,)
        if lang == "zh":
            state = "最新版本" if newest else f"最新版本为 {u.newest.source}"
            differs = f"；{'、'.join(u.differs)} 中的数字与此不同" if u.differs else ""
            parts.append(f"（使用的版本：{used}，共 {u.size} 个版本，{state}{differs}）")
        else:
            state = "the newest" if newest else f"the newest is {u.newest.source}"
            differs = f"; {', '.join(u.differs)} states other figures" if u.differs else ""
            parts.append(f"(Version used: {used}; {state} of {u.size} versions{differs}.)")
    return " ".join(parts)
