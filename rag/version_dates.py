"""The effective date a document states in its text: 本办法自2025年1月1日起施行, 生效日期：2025-01-01,
"effective from 1 March 2022", "takes effect on January 1, 2025", "Effective date: 2025-01-01". Only
dates introduced as the document's own start count (a date anywhere in the text does not): they
order versions whose names carry no version marker (rag/versions.py)."""

from __future__ import annotations

import re

_MONTHS = {m: i for i, m in enumerate(("january", "february", "march", "april", "may", "june", "july", "august",
                                       "september", "october", "november", "december"), 1)}
_MONTH = r"(?P<mon>" + "|".join(_MONTHS) + r"|" + "|".join(m[:3] for m in _MONTHS) + r")\.?"
_YEAR = r"(?P<y>(?:19|20)\d\d)"
_ISO = rf"{_YEAR}[-/.](?P<m>\d{{1,2}})(?:[-/.](?P<d>\d{{1,2}}))?"
_EN_DATE = rf"(?:{_ISO}|{_MONTH}\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y2>(?:19|20)\d\d)|" \
           rf"(?P<d3>\d{{1,2}})(?:st|nd|rd|th)?\s+{_MONTH.replace('mon', 'mon3')}\s+(?P<y3>(?:19|20)\d\d)|" \
           rf"(?P<y4>(?:19|20)\d\d))"
_ZH_DATE = r"(?P<zy>(?:19|20)\d\d)\s*年(?:\s*(?P<zm>\d{1,2})\s*月(?:\s*(?P<zd>\d{1,2})\s*[日号])?)?"
_PATTERNS = [
    re.compile(rf"{_ZH_DATE}\s*(?:起|开始)?\s*(?:正式)?(?:施行|实施|执行|生效|启用)"),
    re.compile(rf"(?:生效|施行|实施)(?:日期|时间)\s*[:：为]?\s*(?:{_ZH_DATE}|{_ISO.replace('?P<', '?P<i')})"),
    re.compile(rf"(?:effective|in\s+force|applies|valid)\s*(?:date)?\s*(?:from|as\s+of|on|since|:)?\s*{_EN_DATE}",
               re.I),
    re.compile(rf"takes?\s+effect\s+(?:from|on|as\s+of)?\s*{_EN_DATE}", re.I),
]


def stated_date(text: str) -> tuple[tuple[int, ...], str] | None:
    """The latest effective date the text states, as (sort key, label "2025-01-01" / "2025-03" /
    "2025"), or None."""
    found: list[tuple[int, ...]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            key = _key(match.groupdict())
            if key:
                found.append(key)
    if not found:
        return None
    best = max(found)
    return best, "-".join(f"{p:02d}" if i else str(p) for i, p in enumerate(best))


def _key(g: dict[str, str | None]) -> tuple[int, ...]:
    year = g.get("zy") or g.get("y") or g.get("iy") or g.get("y2") or g.get("y3") or g.get("y4")
    if not year:
        return ()
    month = g.get("zm") or g.get("m") or g.get("im")
    name = g.get("mon") or g.get("mon3")
    if name:
        month = str(_MONTHS.get(name.lower()) or next(v for k, v in _MONTHS.items() if k.startswith(name.lower())))
    day = g.get("zd") or g.get("d") or g.get("id") or g.get("d2") or g.get("d3")
    parts = [int(year)] + ([int(month)] if month else []) + ([int(day)] if month and day else [])
    if len(parts) > 1 and not 1 <= parts[1] <= 12 or len(parts) > 2 and not 1 <= parts[2] <= 31:
        return ()
    return tuple(parts)
