"""Checks of a query request's own arguments (question, history, transforms, counts), each
raising InvalidRequest naming the field, and the filter as shown in `info`."""

from __future__ import annotations

from typing import Any

from rag.errors import InvalidRequest
from rag.settings import TRANSFORMS
from rag.types import Filter

MAX_QUESTION_CHARS = 4000


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequest("the question is empty", field="question")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}",
                             field="question")
    return question.strip()


def check_history(history: list[dict] | None) -> list[dict[str, str]]:
    out = []
    for i, message in enumerate(history or []):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system") \
                or not isinstance(message.get("content"), str):
            raise InvalidRequest(f"history[{i}] must be {{'role': 'user'|'assistant', 'content': str}}, "
                                 f"got {message!r}"[:200], field="history")
        if message["role"] != "system":
            out.append({"role": message["role"], "content": message["content"]})
    return out


def check_transforms(names: Sequence[str]) -> list[str]:
    out = [n.strip() for name in names for n in str(name).split(",") if n.strip()]
    unknown = [n for n in out if n not in TRANSFORMS]
    if unknown:
        raise InvalidRequest(f"unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}", field="transforms")
    return list(dict.fromkeys(out))


def check_count(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise InvalidRequest(f"{name} must be an integer from 1 to 1000, got {value!r}", field=name)
    return value


def filter_dict(flt: Filter | None) -> dict[str, Any] | None:
    if flt is None or flt.is_empty():
        return None
    return {"sources": list(flt.sources), "doc_ids": list(flt.doc_ids), "tags": list(flt.tags),
            "mtime_from": flt.mtime_from, "mtime_to": flt.mtime_to}
