"""Version families: "Attendance policy 2023.md" and "Attendance policy 2024.md" are two versions of
one document. Two documents are one family when their names (or titles), in the same folder, are
equal once a version marker is removed (a year, a date such as 2024-03, v2 / version 2 / rev 3, a
copy number "(1)", 第二版 / 修订版) and their texts overlap: the Jaccard similarity of their word
3-shingles is at least `min_overlap`. The order within a family is the marker (a later date or a
higher version is newer), then the modified time.

Families are stored in the catalog's SQLite file, in their own table (`doc_versions`: kb, doc_id,
family, version_order, label) with a signature of the documents they were computed from; they are
recomputed when the catalog's documents change (the first query or `rag docs` after an ingest).

At query time `prefer_latest` keeps, of each family among the hits, the newest version found, or
the versions the question names ("... in 2023"); `note` says which version the answer used."""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from rag.kb import KnowledgeBase
from rag.sqlite import connect
from rag.text import tokenize
from rag.types import Hit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS doc_versions (
    kb TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    family TEXT NOT NULL,
    version_order INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kb, doc_id)
);
CREATE TABLE IF NOT EXISTS doc_version_state (kb TEXT PRIMARY KEY, signature TEXT NOT NULL);
"""
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
    words = tokenize(text, stopwords=False)
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def detect(docs: Sequence[tuple[str, str, str, float, str]], min_overlap: float) -> list[Version]:
    """Families among (doc_id, source, title, mtime, text) tuples; documents in no family are left out."""
    groups: dict[tuple[str, str], list[tuple[str, str, tuple[int, ...], float, str, str]]] = {}
    for doc_id, source, title, mtime, text in docs:
        path = PurePosixPath(source)
        stem, label, key = split_marker(path.stem)
        if not label and title:
            stem_t, label_t, key_t = split_marker(title)
            if label_t:
                stem, label, key = stem_t, label_t, key_t
        groups.setdefault((str(path.parent), stem), []).append((doc_id, source, key, mtime, label, text))
    out: list[Version] = []
    for (folder, stem), members in groups.items():
        if len(members) < 2 or not any(m[4] for m in members):
            continue
        sets = [shingles(m[5]) for m in members]
        # union-find over pairs whose texts overlap enough
        parent = list(range(len(members)))

        def find(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                if jaccard(sets[i], sets[j]) >= min_overlap:
                    parent[find(j)] = find(i)
        clusters: dict[int, list[int]] = {}
        for i in range(len(members)):
            clusters.setdefault(find(i), []).append(i)
        for indexes in clusters.values():
            if len(indexes) < 2:
                continue
            ordered = sorted((members[i] for i in indexes), key=lambda m: (bool(m[4]), m[2], m[3]))
            family = hashlib.sha256(f"{folder}/{stem}|{ordered[0][0]}".encode()).hexdigest()[:12]
            for order, m in enumerate(ordered, 1):
                out.append(Version(m[0], m[1], family, order, m[4], order == len(ordered)))
    return out


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
    signature = hashlib.sha256(json.dumps([min_overlap, *[(d.doc_id, d.source, d.content_hash, d.mtime)
                                                          for d in docs]]).encode()).hexdigest()
    by_id = {d.doc_id: d for d in docs}
    with closing(connect(kb.catalog.path, _SCHEMA)) as conn:
        row = conn.execute("SELECT signature FROM doc_version_state WHERE kb=?", (kb.name,)).fetchone()
        if row is not None and row["signature"] == signature:
            rows = conn.execute("SELECT * FROM doc_versions WHERE kb=?", (kb.name,)).fetchall()
            sizes: dict[str, int] = {}
            for r in rows:
                sizes[r["family"]] = max(sizes.get(r["family"], 0), r["version_order"])
            return {r["doc_id"]: Version(r["doc_id"], by_id[r["doc_id"]].source, r["family"], r["version_order"],
                                         r["label"], r["version_order"] == sizes[r["family"]])
                    for r in rows if r["doc_id"] in by_id}
        found = detect(_candidates(kb, docs), min_overlap)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM doc_versions WHERE kb=?", (kb.name,))
        conn.executemany("INSERT INTO doc_versions VALUES (?,?,?,?,?)",
                         [(kb.name, v.doc_id, v.family, v.order, v.label) for v in found])
        conn.execute("INSERT OR REPLACE INTO doc_version_state VALUES (?,?)", (kb.name, signature))
        conn.execute("COMMIT")
    return {v.doc_id: v for v in found}


def _candidates(kb: KnowledgeBase, docs: list) -> list[tuple[str, str, str, float, str]]:
    """Only documents sharing a name once the marker is removed need their text (read from the store)."""
    def names(d) -> set[tuple[str, str]]:
        path = PurePosixPath(d.source)
        return {(str(path.parent), split_marker(n)[0]) for n in (path.stem, d.title) if n}

    keys: dict[tuple[str, str], int] = {}
    for d in docs:
        for key in names(d):
            keys[key] = keys.get(key, 0) + 1
    out = []
    for d in docs:
        if any(keys[k] > 1 for k in names(d)):
            chunks = sorted(kb.get_chunks(d.chunk_ids).values(), key=lambda c: c.start)
            out.append((d.doc_id, d.source, d.title, d.mtime, "\n".join(c.text for c in chunks)))
    return out


def prefer_latest(hits: list[Hit], versions: dict[str, Version], question: str) -> tuple[list[Hit], list[dict]]:
    """The hits without the older versions of a family when a newer one (or the one the question
    names) is among them; and, per family met, which versions were used and dropped."""
    if not versions:
        return hits, []
    asked = question.lower()
    present: dict[str, list[Version]] = {}
    for hit in hits:
        v = versions.get(hit.chunk.doc_id)
        if v is not None and v not in present.setdefault(v.family, []):
            present[v.family].append(v)
    keep: set[str] = set()
    report = []
    for family, found in present.items():
        named = [v for v in found if v.label and v.label.lower() in asked]
        chosen = named or [max(found, key=lambda v: v.order)]
        keep |= {v.doc_id for v in chosen}
        newest = next(v for v in versions.values() if v.family == family and v.newest)
        report.append({"family": family, "used": [v.source for v in chosen],
                       "dropped": [v.source for v in found if v not in chosen], "newest": newest.source,
                       "reason": "named in the question" if named else "newest found",
                       "versions": sum(1 for v in versions.values() if v.family == family)})
    kept = [h for h in hits if h.chunk.doc_id not in versions or h.chunk.doc_id in keep]
    return kept, report


def note(report: list[dict[str, Any]], lang: str) -> str:
    """One line saying which version(s) the answer used, or ""."""
    parts = []
    for f in report:
        used = ", ".join(f["used"])
        if lang == "zh":
            state = "最新版本" if f["used"] == [f["newest"]] else f"最新版本为 {f['newest']}"
            parts.append(f"（使用的版本：{used}，共 {f['versions']} 个版本，{state}）")
        else:
            state = "the newest" if f["used"] == [f["newest"]] else f"the newest is {f['newest']}"
            parts.append(f"(Version used: {used}; {state} of {f['versions']} versions.)")
    return " ".join(parts)
