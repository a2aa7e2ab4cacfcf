"""JSON and JSON Lines. Each record (an object of a top-level array, a JSONL line, or the
objects of a single wrapped array like {"data": [...]}) becomes one block of "key: value"
lines, its common text fields (title, text, content, body) first. Records with question/answer
keys also become `QAPair`s."""

from __future__ import annotations

import json
from typing import Any

from ingest.formats.builder import DocBuilder, clean_text
from ingest.formats.tables import ANSWER_KEYS, QUESTION_KEYS, normalize_key
from ingest.limits import ParseBudget
from rag.errors import ParseError
from rag.types import ParsedDocument

_TITLE_KEYS = ("title", "name", "heading", "标题")
_BODY_KEYS = ("text", "content", "body", "正文", "内容")


def parse_json(text: str, fmt: str, encoding: str, stem: str, *, lines: bool,
               budget: ParseBudget) -> ParsedDocument:
    """Each record is charged to `budget` as a row whose cells are its "key: value" lines."""
    records = _jsonl_records(text, budget) if lines else _json_records(text)
    budget.tick()
    builder = DocBuilder(fmt)
    builder.metadata["encoding"] = encoding
    builder.metadata["records"] = len(records)
    for record in records:
        budget.row(add_record(builder, record))
    return builder.build(stem)


def _json_records(text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1 and all(not isinstance(v, (dict, list)) or v is lists[0] for v in data.values()):
            return lists[0]
    return [data]


def _jsonl_records(text: str, budget: ParseBudget) -> list[Any]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if number % 1024 == 0:
            budget.tick()
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON Lines at line {number}: {exc.msg}") from exc
    return records


def add_record(builder: DocBuilder, record: Any) -> int:
    """Add one record's block (and Q&A pair); returns its number of "key: value" lines."""
    if not isinstance(record, dict):
        lines = [value if not key else f"{key}: {value}" for key, value in flatten(record, "")]
        builder.add("\n".join(lines), "text", keep_lines=True, section_path=())
        return len(lines)
    by_key = {normalize_key(k): k for k in record}
    title_key = next((by_key[k] for k in _TITLE_KEYS if k in by_key and _is_scalar(record[by_key[k]])), None)
    body_keys = [by_key[k] for k in _BODY_KEYS if k in by_key and _is_scalar(record[by_key[k]])]
    lines = []
    title = clean_text(str(record[title_key])) if title_key is not None and record[title_key] is not None else ""
    if title:
        lines.append(title)
    lines.extend(clean_text(str(record[k])) for k in body_keys if record[k] is not None)
    lead = {title_key, *body_keys}
    for key, value in record.items():
        if key not in lead:
            lines.extend(f"{name}: {text}" for name, text in flatten(value, str(key)))
    lines = [line for line in lines if line]
    block = builder.add("\n".join(lines), "text", keep_lines=True, section_path=(title,) if title else ())
    question = next((by_key[k] for k in by_key if k in QUESTION_KEYS), None)
    answer = next((by_key[k] for k in by_key if k in ANSWER_KEYS), None)
    if block is not None and question is not None and answer is not None:
        if _is_scalar(record[question]) and _is_scalar(record[answer]):
            builder.add_qa(_scalar(record[question]), _scalar(record[answer]), block)
    return len(lines)


def flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    """(dotted key, value text) pairs; lists of scalars are joined with ", "."""
    if isinstance(value, dict):
        pairs = []
        for key, inner in value.items():
            pairs.extend(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(value, list):
        if all(_is_scalar(v) for v in value):
            joined = ", ".join(_scalar(v) for v in value if v is not None)
            return [(prefix, clean_text(joined))] if joined.strip() else []
        pairs = []
        for index, inner in enumerate(value):
            pairs.extend(flatten(inner, f"{prefix}[{index}]"))
        return pairs
    text = clean_text(_scalar(value)) if value is not None else ""
    return [(prefix, text)] if text else []


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
