"""Generated questions for QA-style matching: the configured LLM writes questions that a chunk
answers; they are embedded as extra vectors pointing back to the chunk."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from rag.errors import LLMError
from rag.protocols import LLM
from rag.text import detect_language

log = logging.getLogger(__name__)

PROMPT_EN = ("Write {n} different questions that the passage below answers. Each question must be answerable from "
             "the passage alone. Output one question per line, with no numbering and nothing else.\n\nPassage:\n{text}")
PROMPT_ZH = "请根据下面的段落写出{n}个不同的问题，每个问题都必须能仅凭该段落回答。每行一个问题，不要编号，不要输出其他内容。\n\n段落：\n{text}"
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)、:]|[Qq]\d*[:：.])\s*")


def parse_questions(reply: str, n: int) -> list[str]:
    questions = []
    for line in reply.splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"“”')
        if len(line) >= 4 and line not in questions:
            questions.append(line)
    return questions[:n]


class QuestionWriter:
    def __init__(self, llm: LLM, n: int = 3, max_chars: int = 2000) -> None:
        self.llm = llm
        self.n = n
        self.max_chars = max_chars

    def generate(self, texts: Sequence[str]) -> list[list[str]]:
        out = []
        for text in texts:
            template = PROMPT_ZH if detect_language(text) == "zh" else PROMPT_EN
            prompt = template.format(n=self.n, text=text[: self.max_chars])
            try:
                reply = self.llm.chat([{"role": "user", "content": prompt}], max_tokens=64 * self.n)
            except LLMError as exc:
                log.warning("question generation failed, chunk indexed without questions: %s", exc.message)
                reply = ""
            out.append(parse_questions(reply, self.n))
        return out
