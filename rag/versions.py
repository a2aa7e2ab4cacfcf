"""Version families: "Attendance policy 2023.md" and "Attendance policy 2024.md" are two versions of
one document. Two documents are one family when
- their names (or titles), in the same folder, are equal once a version marker is removed (a year, a
  date such as 2024-03, v2 / version 2 / rev 3, a copy number "(1)", 第二版 / 修订版) and their texts
  overlap: the Jaccard similarity of their word 3-shingles, figures masked (so "two days" and "three
  days" are the same words), is at least `min_overlap`, lowered for short texts (down to half of it
  under `SHORT_SHINGLES` shingles), where the name weighs more than a few changed sentences; or
- whatever their names, each states an effective date in its text (自2025年1月1日起施行, "effective
  from 1 March 2022", rag/version_dates.py), the dates differ and the texts overlap by `min_overlap`.
The order within a family is the marker (a later date or a higher version is newer), then the stated
date, then the modified time.

Families are stored in the catalog's database (rag/db.py), in their own table (`doc_versions`: kb, doc_id,
family, version_order, label) with a signature of the documents they were computed from; they are
recomputed when the catalog's documents change (the first query or `rag docs` after an ingest).
What a query does with them is rag/version_stage.py."""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from rag.kb import KnowledgeBase
from rag.text import tokenize
from rag.version_dates import stated_date

MIGRATIONS = [
    (  # 1: the tables as they were in the SQLite catalog before versioning
        """CREATE TABLE IF NOT EXISTS doc_versions (
            kb TEXT NOT NULL,
            doc_id TEXT NOT NULL,
            family TEXT NOT NULL,
            version_order INTEGER NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (kb, doc_id)
        )""",
        "CREATE TABLE IF NOT EXISTS doc_version_state (kb TEXT PRIMARY KEY, signature TEXT NOT NULL)",
    ),
]
SCHEME = 2  # bump when detection changes: stored families are then recomputed
SHORT_SHINGLES = 150  # under this many shingles the name weighs more (the overlap needed is lowered)
_FIGURE_RE = re.compile(r"\d+(?:[.,]\d+)*|[零〇一二三四五六七八九十百千万两]+|\b(?:zero|one|two|three|four|five|six|"
                        r"seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|sixty|ninety|"
                        r"hundred|thousand|half)\b", re.I)
_ZH_NUM = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_MARKERS = [  # (pattern, kind); the first group is the value
    (re.compile(r"(?<!\d)((?:19|20)\d\d[-_.](?:0?[1-9]|1[0-2])(?:[-_.](?:0?[1-9]|[12]\d|3[01]))?)(?!\d)"), "date"),
    (re.compile(r"(?<!\d)((?:19|20)\d\d)(?!\d)"), "date"),
    (re.compile(r"(?<![a-z])(?:v|ver\.?|version|rev\.?|revision)\s*(\d+(?:\.\d+)*)(?![\d.])", re.I), "version"),
    (re.compile(r"\((\d{1,3})\)"), "copy"),
    (re.compile(r"第([一二三四五六七八九十\d]+)版"), "version"),
    (re.compile(r"(修订)版"), "version"),
]


@dataclass(frozen=True)
class Version:
    doc_id: str
    source: str
    family: str
    order: int  # 1 = oldest
    label: str  # the marker as written ("2024", "v2"), or ""
    newest: bool


def split_marker(name: str) -> tuple[str, str, tuple[int, ...]]:
    """(the name without its version marker, the marker as written, its sort key)."""
    for pattern, kind in _MARKERS:
        match = pattern.search(name)
        if match is None:
            continue
        value = match.group(1)
        if kind == "date":
            key = tuple(int(p) for p in re.split(r"[-_.]", value))
        elif value == "修订":
            key = (2,)
        elif value[0] in _ZH_NUM:
            key = (_ZH_NUM.get(value, 0),)
        else:
            key = tuple(int(p) for p in value.split("."))
        rest = name[: match.start()] + " " + name[match.end():]
        return " ".join(re.sub(r"[\s_\-–—.,()（）\[\]]+", " ", rest).lower().split()), match.group(0).strip(), key
    return " ".join(re.sub(r"[\s_\-–—.,()（）\[\]]+", " ", name).lower().split()), "", ()


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-shingles of `text` with every figure masked ("two days", "60 天" -> "0 days", "0 天")."""
    words = tokenize(_FIGURE_RE.sub(" 0 ", text), stopwords=False)
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def needed_overlap(a: set[str], b: set[str], min_overlap: float) -> float:
    """The overlap two same-named documents need: `min_overlap`, down to half of it for short texts."""
    return min_overlap * min(1.0, max(0.5, min(len(a), len(b)) / SHORT_SHINGLES))


@dataclass(frozen=True)
class _Doc:
    doc_id: str
    source: str
    key: tuple[int, ...]  # the name marker's sort key, or ()
    label: str  # the name marker, or the stated date
    named: bool  # the name has a version marker
    dated: tuple[int, ...]  # the effective date stated in the text, or ()
    mtime: float
    shingles: frozenset[str]


def detect(docs: Sequence[tuple[str, str, str, float, str]], min_overlap: float) -> list[Version]:
    """Families among (doc_id, source, title, mtime, text) tuples; documents in no family are left out."""
    groups: dict[tuple[str, str], list[_Doc]] = {}
    for doc_id, source, title, mtime, text in docs:
        path = PurePosixPath(source)
        stem, label, key = split_marker(path.stem)
        if not label and title:
            stem_t, label_t, key_t = split_marker(title)
            if label_t:
                stem, label, key = stem_t, label_t, key_t
        date = stated_date(text)
        dated, date_label = date if date else ((), "")
        doc = _Doc(doc_id, source, key, label or date_label, bool(label), dated, mtime, frozenset(shingles(text)))
        groups.setdefault((str(path.parent), stem), []).append(doc)
    out: list[Version] = []
    alone: list[_Doc] = []  # in no named family: families by stated dates
    for (folder, stem), members in groups.items():
        if not any(d.named for d in members):
            alone += members
            continue
        clusters = _clusters(members, lambda a, b: needed_overlap(a, b, min_overlap)) if len(members) > 1 else []
        in_family = {d.doc_id for c in clusters for d in c}
        alone += [d for d in members if d.doc_id not in in_family]
        for cluster in clusters:
            out += _family(f"{folder}/{stem}", sorted(cluster, key=lambda d: (d.named, d.key, d.dated, d.mtime)))
    dated = [d for d in alone if d.dated]
    for cluster in _clusters(dated, lambda a, b: min_overlap):
        if len({d.dated for d in cluster}) == len(cluster):  # one document per date
            out += _family("dated", sorted(cluster, key=lambda d: (d.dated, d.mtime)))
    return out


def _clusters(members: list[_Doc], needed) -> list[list[_Doc]]:
    """Groups (of two or more) linked by pairs whose shingles overlap by `needed(a, b)` (union-find)."""
    parent = list(range(len(members)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(members)):
        a = members[i].shingles
        for j in range(i + 1, len(members)):
            b = members[j].shingles
            need = needed(a, b)
            if a and b and min(len(a), len(b)) >= need * max(len(a), len(b)) and jaccard(a, b) >= need:
                parent[find(j)] = find(i)
    clusters: dict[int, list[_Doc]] = {}
    for i, doc in enumerate(members):
        clusters.setdefault(find(i), []).append(doc)
    return [c for c in clusters.values() if len(c) > 1]


def _family(name: str, ordered: list[_Doc]) -> list[Version]:
    family = hashlib.sha256(f"{name}|{ordered[0].doc_id}".encode()).hexdigest()[:12]
    return [Version(d.doc_id, d.source, family, order, d.label, order == len(ordered))
            for order, d in enumerate(ordered, 1)]


# catalog -> {(kb, min_overlap): (catalog generation, families)}: every query asks, and listing the
# documents costs ~30 ms at 2,300 documents (benchmarks/peers, 100k chunks). Per catalog object, so
# a catalog made anew at the same path (its generations restart) never reads another's entries
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, float], tuple[int, dict[str, Version]]]] = (
    weakref.WeakKeyDictionary())


def families(kb: KnowledgeBase, min_overlap: float = 0.5) -> dict[str, Version]:
    """doc id -> Version for the documents of `kb` that have versions; recomputed when the
    indexed documents (or `min_overlap`) changed since the stored result. Kept in memory while
    the catalog's generation of `kb` stays the same (it moves whenever a document is indexed,
    replaced or removed, by any process)."""
    known = _CACHE.setdefault(kb.catalog, {})
    generation = kb.catalog.generation(kb.name)
    cached = known.get((kb.name, min_overlap))
    if cached is not None and cached[0] == generation:
        return cached[1]
    found = _families(kb, min_overlap)
    known[(kb.name, min_overlap)] = (generation, found)
    return found


def _families(kb: KnowledgeBase, min_overlap: float) -> dict[str, Version]:
    docs = kb.catalog.list_docs(kb.name, state="indexed")
    signature = hashlib.sha256(json.dumps([SCHEME, min_overlap, *[(d.doc_id, d.source, d.content_hash, d.mtime)
                                                          for d in docs]]).encode()).hexdigest()
    by_id = {d.doc_id: d for d in docs}
    db = kb.catalog.db
    db.migrate("versions", MIGRATIONS)
    row = db.one("SELECT signature FROM doc_version_state WHERE kb=?", (kb.name,))
    if row is not None and row["signature"] == signature:
        rows = db.query("SELECT * FROM doc_versions WHERE kb=?", (kb.name,))
        sizes: dict[str, int] = {}
        for r in rows:
            sizes[r["family"]] = max(sizes.get(r["family"], 0), r["version_order"])
        return {r["doc_id"]: Version(r["doc_id"], by_id[r["doc_id"]].source, r["family"], r["version_order"],
                                     r["label"], r["version_order"] == sizes[r["family"]])
                for r in rows if r["doc_id"] in by_id}
    found = detect(_candidates(kb, docs), min_overlap)
    with db.transaction():
        db.execute("DELETE FROM doc_versions WHERE kb=?", (kb.name,))
        db.execute_many("INSERT INTO doc_versions (kb, doc_id, family, version_order, label) VALUES (?,?,?,?,?)",
                        [(kb.name, v.doc_id, v.family, v.order, v.label) for v in found])
        db.upsert("doc_version_state", {"kb": kb.name, "signature": signature}, ("kb",))
    return {v.doc_id: v for v in found}


def _candidates(kb: KnowledgeBase, docs: list) -> list[tuple[str, str, str, float, str]]:
    """The documents that may be versions, with their texts (read from the store): those sharing a
    name once the marker is removed, and those whose first or last chunks state an effective date
    (only these few chunks are read of the others)."""
    def names(d) -> set[tuple[str, str]]:
        path = PurePosixPath(d.source)
        return {(str(path.parent), split_marker(n)[0]) for n in (path.stem, d.title) if n}

    keys: dict[tuple[str, str], int] = {}
    for d in docs:
        for key in names(d):
            keys[key] = keys.get(key, 0) + 1
    named = [d for d in docs if any(keys[k] > 1 for k in names(d))]
    named_ids = {d.doc_id for d in named}
    others = [d for d in docs if d.doc_id not in named_ids]
    ends = {d.doc_id: [*d.chunk_ids[:2], *d.chunk_ids[2:][-2:]] for d in others}
    read = kb.get_chunks([cid for ids in ends.values() for cid in ids]) if others else {}
    dated = [d for d in others if stated_date("\n".join(read[c].text for c in ends[d.doc_id] if c in read))]
    out = []
    for d in named + (dated if len(dated) > 1 else []):
        chunks = sorted(kb.get_chunks(d.chunk_ids).values(), key=lambda c: c.start)
        out.append((d.doc_id, d.source, d.title, d.mtime, "\n".join(c.text for c in chunks)))
    return out
