"""Tolerant readers for the files of a BEIR-layout dataset.

A row that cannot be used (invalid JSON, a missing field, a duplicate id, a malformed
judgement) is skipped and recorded in `Issues` with its file, line and reason; the rest of the
file is read. Only a file that cannot be read at all is fatal: one whose non-blank rows are
all unreadable (a JSON array instead of JSON Lines, a qrels file in another format).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

log = logging.getLogger(__name__)

LOGGED_ISSUES = 20  # row problems logged as warnings; the rest at debug level (all are counted)
LISTED_ISSUES = 1000  # row problems kept verbatim for the report
QRELS_HEADERS = ("query-id", "query_id", "qid", "query")


@dataclass
class Issues:
    """Skipped rows: `counts` per "<file>: <reason>", `rows` the first LISTED_ISSUES messages."""

    counts: Counter = field(default_factory=Counter)
    rows: list[str] = field(default_factory=list)

    def skip(self, path: Path, lineno: int, reason: str, detail: str = "") -> None:
        self.counts[f"{path.name}: {reason}"] += 1
        message = f"{path.name}:{lineno}: {reason}" + (f" ({detail})" if detail else "")
        if len(self.rows) < LISTED_ISSUES:
            self.rows.append(message)
        level = logging.WARNING if sum(self.counts.values()) <= LOGGED_ISSUES else logging.DEBUG
        log.log(level, "skipped row %s", message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class AnswerRow:
    """One usable row of answers.jsonl."""

    lineno: int
    qid: str
    doc_id: str | None
    answers: tuple[str, ...]  # alternative gold answers: any one counts
    starts: tuple[int | None, ...]  # offsets of `answers` in the document, None when not given
    all_of: tuple[tuple[str, ...], ...]  # parts that must all appear, each with alternative forms


def as_id(value: Any) -> str | None:
    """A BEIR id: a non-empty string, or an integer written as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _lines(path: Path, issues: Issues) -> Iterator[tuple[int, str]]:
    """Non-blank decoded lines; a line that is not UTF-8 is skipped (a BOM is allowed)."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                issues.skip(path, lineno, "not UTF-8", str(exc.reason))
                continue
            if line.strip():
                yield lineno, line


def read_jsonl(path: Path, issues: Issues) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every JSON object line; fatal only when no line is one."""
    seen = yielded = 0
    for lineno, line in _lines(path, issues):
        seen += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            issues.skip(path, lineno, "invalid JSON", exc.msg)
            continue
        if not isinstance(row, dict):
            issues.skip(path, lineno, "not a JSON object")
            continue
        yielded += 1
        yield lineno, row
    if seen and not yielded:
        raise ConfigError(f"{path}: no line is a JSON object (expected JSON Lines: one object per line)")


def read_queries(path: Path, issues: Issues) -> tuple[dict[str, str], dict[str, str]]:
    """(queries with text, skipped query id -> reason). An empty text skips the query; an id
    repeated with another text skips it (which text is meant is unknown); a repeat with the
    same text is ignored."""
    queries: dict[str, str] = {}
    skipped: dict[str, str] = {}
    first_text: dict[str, str] = {}
    for lineno, row in read_jsonl(path, issues):
        qid = as_id(row.get("_id"))
        if qid is None:
            issues.skip(path, lineno, "missing or invalid _id")
            continue
        text = row.get("text")
        text = text if isinstance(text, str) else ""
        if qid in first_text:
            if first_text[qid] == text:
                issues.skip(path, lineno, "repeated query row", f"id {qid!r}, same text")
            else:
                queries.pop(qid, None)
                skipped[qid] = "duplicate id with different texts"
            continue
        first_text[qid] = text
        if not text.strip():
            skipped[qid] = "empty text"
        else:
            queries[qid] = text
    return queries, skipped


def _grade(text: str) -> float | int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def read_qrels(path: Path, issues: Issues) -> dict[str, dict[str, float | int]]:
    """Every judgement, any grade: qid -> {doc_id: grade}. Rows are `query-id<TAB>corpus-id
    <TAB>score` (a header line is skipped) or TREC's four columns `qid 0 docid score`."""
    judgements: dict[str, dict[str, float | int]] = {}
    read = 0
    first = True
    for lineno, line in _lines(path, issues):
        parts = [p.strip() for p in line.rstrip("\r\n").split("\t")]
        if len(parts) not in (3, 4):
            parts = line.split()
        if first:
            first = False
            if parts and parts[0].lower() in QRELS_HEADERS:
                continue
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3 or not parts[0] or not parts[1]:
            issues.skip(path, lineno, "expected 3 tab-separated columns (or 4, TREC)", f"got {len(parts)}")
            continue
        qid, doc_id, score_text = parts
        grade = _grade(score_text)
        if grade is None:
            issues.skip(path, lineno, "score is not a number", repr(score_text))
            continue
        read += 1
        judged = judgements.setdefault(qid, {})
        if doc_id in judged and judged[doc_id] != grade:
            issues.skip(path, lineno, "repeated judgement with another grade", "the higher grade is kept")
            grade = max(grade, judged[doc_id])
        judged[doc_id] = grade
    if not read and not first:
        raise ConfigError(f"{path}: no readable judgement (expected query-id<TAB>corpus-id<TAB>score lines)")
    return judgements


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _parse_all_of(value: Any) -> tuple[tuple[str, ...], ...] | None:
    """`all_of`: a list of parts, each a string or a list of alternative strings."""
    if not isinstance(value, list):
        return None
    parts = []
    for part in value:
        alternatives = _strings(part)
        if alternatives is None:
            return None
        kept = tuple(dict.fromkeys(a.strip() for a in alternatives if a.strip()))
        if not kept:
            return None
        parts.append(kept)
    return tuple(parts)


def read_answers(path: Path, issues: Issues) -> list[AnswerRow]:
    """Usable rows of answers.jsonl: `_id`, `answers` (alternative answers, any one counts),
    optional `all_of` (parts that must all appear, each a string or a list of alternatives),
    optional `doc_id` and `answer_starts` (offsets of `answers`, -1 or null when unknown)."""
    rows: list[AnswerRow] = []
    for lineno, row in read_jsonl(path, issues):
        qid = as_id(row.get("_id"))
        if qid is None:
            issues.skip(path, lineno, "missing or invalid _id")
            continue
        texts = row.get("answers", [])
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            issues.skip(path, lineno, "'answers' must be a list of strings")
            continue
        starts = row.get("answer_starts")
        if starts is None:
            starts = [None] * len(texts)
        if not isinstance(starts, list) or len(starts) != len(texts):
            issues.skip(path, lineno, "'answer_starts' must be a list as long as 'answers'")
            continue
        if not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in starts):
            issues.skip(path, lineno, "'answer_starts' must hold integers or null")
            continue
        all_of = _parse_all_of(row["all_of"]) if row.get("all_of") is not None else ()
        if all_of is None:
            issues.skip(path, lineno, "'all_of' must be a list of strings or lists of strings, none blank")
            continue
        doc_id = as_id(row.get("doc_id")) if row.get("doc_id") is not None else None
        if row.get("doc_id") is not None and doc_id is None:
            issues.skip(path, lineno, "invalid doc_id")
            continue
        pairs = [(t, s if s is None or s >= 0 else None) for t, s in zip(texts, starts) if t.strip()]
        if not pairs and not all_of:
            issues.skip(path, lineno, "no gold answer (empty 'answers' and no 'all_of')")
            continue
        rows.append(AnswerRow(lineno, qid, doc_id, tuple(t for t, _ in pairs), tuple(s for _, s in pairs),
                              all_of))
    return rows
