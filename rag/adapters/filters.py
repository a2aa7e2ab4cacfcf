"""Translate `rag.types.Filter` into engine-neutral conditions, then into each engine's own
filter classes (qdrant-client models, qdrant-edge). The meaning is `Filter.matches`:

- `sources` / `doc_ids`: the keyword field equals one of the values (any-of);
- `tags`: every `key=value` tag is an element of the `tags` array (one condition per tag);
- `mtime_from` / `mtime_to`: inclusive float range on `mtime`.

Chunks always carry `mtime` in their payload (`Chunk.payload()`), so the engines' "missing
field never matches a range" and `Filter.matches`' "missing means 0.0" never disagree on data
written through these adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.types import Filter

# payload fields the stores index (keyword) and the float field used for ranges
KEYWORD_FIELDS = ("source", "doc_id", "tags", "kb", "kind")
FLOAT_FIELDS = ("mtime",)


@dataclass(frozen=True)
class AnyOf:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Equals:
    key: str
    value: str


@dataclass(frozen=True)
class Between:
    key: str
    gte: float | None
    lte: float | None


Condition = AnyOf | Equals | Between


def conditions(flt: Filter | None) -> list[Condition]:
    """The conditions that must all hold; empty for no filter."""
    if flt is None or flt.is_empty():
        return []
    out: list[Condition] = []
    if flt.sources:
        out.append(AnyOf("source", tuple(flt.sources)))
    if flt.doc_ids:
        out.append(AnyOf("doc_id", tuple(flt.doc_ids)))
    out.extend(Equals("tags", tag) for tag in dict.fromkeys(flt.tags))
    if flt.mtime_from is not None or flt.mtime_to is not None:
        gte = float(flt.mtime_from) if flt.mtime_from is not None else None
        lte = float(flt.mtime_to) if flt.mtime_to is not None else None
        out.append(Between("mtime", gte, lte))
    return out


def to_qdrant(flt: Filter | None) -> Any:
    """A `qdrant_client.models.Filter`, or None when nothing is filtered."""
    conds = conditions(flt)
    if not conds:
        return None
    from qdrant_client import models

    must: list[Any] = []
    for c in conds:
        if isinstance(c, AnyOf):
            must.append(models.FieldCondition(key=c.key, match=models.MatchAny(any=list(c.values))))
        elif isinstance(c, Equals):
            must.append(models.FieldCondition(key=c.key, match=models.MatchValue(value=c.value)))
        else:
            must.append(models.FieldCondition(key=c.key, range=models.Range(gte=c.gte, lte=c.lte)))
    return models.Filter(must=must)


def to_edge(flt: Filter | None) -> Any:
    """A `qdrant_edge.Filter`, or None when nothing is filtered."""
    conds = conditions(flt)
    if not conds:
        return None
    import qdrant_edge as qe

    must: list[Any] = []
    for c in conds:
        if isinstance(c, AnyOf):
            must.append(qe.FieldCondition(c.key, match=qe.MatchAny(list(c.values))))
        elif isinstance(c, Equals):
            must.append(qe.FieldCondition(c.key, match=qe.MatchValue(c.value)))
        else:
            must.append(qe.FieldCondition(c.key, range=qe.RangeFloat(gte=c.gte, lte=c.lte)))
    return qe.Filter(must=must)
