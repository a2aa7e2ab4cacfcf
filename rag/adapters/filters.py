"""Translate `rag.types.Filter` into engine-neutral conditions, then into each engine's own
filter classes (qdrant-client models, qdrant-edge) or SQL over a jsonb payload (pgvector). The
meaning is `Filter.matches`:

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
SCALAR_FIELDS = ("source", "doc_id")  # keyword fields that always hold one string (never an array)


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


def pg_float(key: str) -> Any:
    """The SQL expression of a float payload field, `(payload ->> 'key')::float8`: ranges use it
    and `PgVectorStore` indexes it (FLOAT_FIELDS), so both must be written by this function."""
    from psycopg import sql

    return sql.SQL("(payload ->> {})::float8").format(sql.Literal(key))


def to_pg(flt: Filter | None) -> tuple[Any, list[Any]]:
    """A `psycopg.sql` condition over the jsonb column `payload` and its parameters ("TRUE" when
    nothing is filtered). Keyword conditions are jsonb containment, which the payload's GIN index
    (jsonb_path_ops) answers; like Qdrant's match, a value matches a field equal to it or an array
    holding it. Ranges compare `pg_float(key)` (NULL, so no match, when the field is missing)."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    parts: list[Any] = []
    params: list[Any] = []
    for c in conditions(flt):
        if isinstance(c, Between):
            bounds = [(">=", c.gte), ("<=", c.lte)]
            for op, bound in bounds:
                if bound is not None:
                    parts.append(sql.SQL("{} {} %s").format(pg_float(c.key), sql.SQL(op)))
                    params.append(bound)
            continue
        values = c.values if isinstance(c, AnyOf) else (c.value,)
        if c.key in SCALAR_FIELDS and all(isinstance(v, str) for v in values):
            # a field that always holds one string (a tag filter becomes the ids of the documents carrying
            # the tags, hundreds of them): one lookup in the field's btree (`PgVectorStore` makes one per
            # SCALAR_FIELDS entry) instead of two containment tests per value, which cost seconds at 100k
            # chunks; the key is a literal so that the planner matches the index's expression
            parts.append(sql.SQL("payload ->> {} = ANY(%s::text[])").format(sql.Literal(c.key)))
            params.append(list(values))
            continue
        options = []
        for value in values:
            options.append(sql.SQL("payload @> %s OR payload @> %s"))
            params.extend([Jsonb({c.key: value}), Jsonb({c.key: [value]})])
        parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(options)))
    if not parts:
        return sql.SQL("TRUE"), []
    return sql.SQL(" AND ").join(parts), params
