"""LLM-judge prompts (text files beside this module, `$name` placeholders) and the parser of
the judge's `{"score": 0..1, "reason": ...}` reply.

- `faithfulness`: placeholders `$question`, `$answer`, `$sources` (numbered source texts);
  is every claim of the answer supported by the sources?
- `answer_relevance`: placeholders `$question`, `$answer`; does the answer address the question?
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template

from rag.errors import ConfigError

PROMPT_DIR = Path(__file__).parent
JUDGE_PROMPTS = ("faithfulness", "answer_relevance")


def load_prompt(name: str) -> str:
    path = PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        raise ConfigError(f"unknown judge prompt {name!r}; known: {', '.join(JUDGE_PROMPTS)}", field="prompt")
    return path.read_text(encoding="utf-8")


def render_prompt(name: str, **values: str) -> str:
    """The prompt `name` with its `$placeholders` filled; a missing value is a ConfigError.
    Values are inserted verbatim (a `$` inside them is not expanded)."""
    try:
        return Template(load_prompt(name)).substitute(values)
    except KeyError as exc:
        raise ConfigError(f"judge prompt {name!r} needs a value for {exc.args[0]!r}", field="prompt") from exc


def format_sources(texts: list[str]) -> str:
    """Sources numbered as the answer cites them: `[1] text`, blank line between."""
    return "\n\n".join(f"[{i}] {text.strip()}" for i, text in enumerate(texts, 1))


def parse_judge_output(reply: str) -> tuple[float, str]:
    """(score clamped to 0..1, reason) from the judge's reply: the first JSON object holding a
    numeric `score` (code fences and surrounding prose are tolerated). ValueError when none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", reply):
        try:
            data, _ = decoder.raw_decode(reply, match.start())
        except json.JSONDecodeError:
            continue
        score = data.get("score") if isinstance(data, dict) else None
        if isinstance(score, int | float) and not isinstance(score, bool):
            return min(1.0, max(0.0, float(score))), str(data.get("reason", ""))
    raise ValueError(f"no JSON object with a numeric score in judge reply: {reply[:200]!r}")
