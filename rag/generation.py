"""Building the answer prompt: numbered sources packed into the model's context window.

Token counts are estimated (about 3.5 characters per token for Latin text, one token per CJK
character), which errs on the safe side for the Qwen/Llama tokenizers used here; the budget is
`context_window - max_tokens - prompt overhead - a safety margin`. Sources go in most relevant
first; a source that does not fit whole is cut at a sentence end, never mid-sentence, and one
whose first sentence does not fit is left out."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rag import prompts
from rag.errors import ConfigError
from rag.text import split_sentences
from rag.types import Chunk, Hit, Source

log = logging.getLogger(__name__)

_CJK_RE = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\u3040-\u30ff\uac00-\ud7af]")
SAFETY_MARGIN = 64  # chat-template tokens and estimation error
MIN_SOURCE_TOKENS = 24  # stop packing when less than this is left


def estimate_tokens(text: str) -> int:
    cjk = len(_CJK_RE.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 3.5)


def heading(chunk: Chunk, lang: str = "en") -> str:
    """"Title · Section > Subsection · page 3" (the file name when there is no title)."""
    parts = [chunk.title or chunk.source]
    section = " > ".join(s for s in chunk.section_path if s and s != chunk.title)
    if section:
        parts.append(section)
    if chunk.page is not None:
        parts.append(prompts.PAGE_LABEL.get(lang, prompts.PAGE_LABEL["en"]).format(page=chunk.page))
    return " · ".join(parts)


def source_block(number: int, chunk: Chunk, text: str, lang: str) -> str:
    return f"[{number}] {heading(chunk, lang)}\n{text.strip()}"


def to_source(number: int, hit: Hit, text: str | None = None) -> Source:
    chunk = hit.chunk
    text = chunk.text if text is None else text
    end = chunk.end
    if len(text) < len(chunk.text) and chunk.end - chunk.start == len(chunk.text):
        end = chunk.start + len(text.rstrip())  # trimmed: the span shrinks with the text
    return Source(number=number, chunk_id=chunk.id, doc_id=chunk.doc_id, source=chunk.source, title=chunk.title,
                  section_path=chunk.section_path, page=chunk.page, start=chunk.start, end=end, text=text,
                  score=hit.score, rerank_score=hit.rerank_score, ocr=chunk.ocr, ocr_confidence=chunk.ocr_confidence,
                  pages=chunk.pages)


def sources_from_hits(hits: Sequence[Hit]) -> list[Source]:
    """Numbered sources for every hit, unpacked (retrieval-only results)."""
    return [to_source(i, h) for i, h in enumerate(hits, 1)]


@dataclass(frozen=True)
class Layout:
    """How the one-call answer prompt is laid out. `question_first`: each user turn also states the
    question before the sources, so that a left-to-right model reads the sources knowing what it
    looks for. `best_last`: the sources are listed from the last to the first number, so the best
    one stands next to the question (the numbers stay the ranks)."""

    question_first: bool = False
    best_last: bool = False


def build_messages(question: str, sources: Sequence[Source], lang: str,
                   layout: Layout = Layout()) -> list[dict[str, str]]:
    """System rules, one worked example (a user turn and the model's cited answer), then the
    user turn with the numbered sources and the question, laid out as `layout` says."""
    ordered = list(reversed(sources)) if layout.best_last else sources
    blocks = "\n\n".join(source_block(s.number, _as_chunk(s), s.text, lang) for s in ordered)
    example_sources, example_question, example_answer = prompts.ANSWER_EXAMPLE.get(lang, prompts.ANSWER_EXAMPLE["en"])
    return [{"role": "system", "content": prompts.ANSWER_SYSTEM.get(lang, prompts.ANSWER_SYSTEM["en"])},
            {"role": "user", "content": _user_turn(example_sources, example_question, lang, layout.question_first)},
            {"role": "assistant", "content": example_answer},
            {"role": "user", "content": _user_turn(blocks, question, lang, layout.question_first)}]


def _user_turn(blocks: str, question: str, lang: str, question_first: bool = False) -> str:
    asked = f"{prompts.QUESTION_LABEL.get(lang, 'Question:')} {question.strip()}"
    return (f"{asked}\n\n" if question_first else "") + (
        f"{prompts.SOURCES_HEADER.get(lang, 'Sources:')}\n\n{blocks}\n\n{asked}")


def _as_chunk(source: Source) -> Chunk:
    return Chunk(id=source.chunk_id, kb="", doc_id=source.doc_id, source=source.source, text=source.text,
                 start=source.start, end=source.end, title=source.title, section_path=source.section_path,
                 page=source.page)


def context_budget(context_window: int, max_tokens: int, question: str, lang: str,
                   estimate: Callable[[str], int] = estimate_tokens, layout: Layout = Layout()) -> int:
    """Tokens left for the sources. Raises ConfigError when the settings leave no room."""
    overhead = sum(estimate(m["content"]) for m in build_messages(question, [], lang, layout))
    overhead += SAFETY_MARGIN
    budget = context_window - max_tokens - overhead
    if budget < MIN_SOURCE_TOKENS * 2:
        raise ConfigError(f"llm_context_window ({context_window}) leaves no room for sources after "
                          f"llm_max_tokens ({max_tokens}) and the prompt ({overhead} tokens): raise "
                          "RAG_LLM_CONTEXT_WINDOW or lower RAG_LLM_MAX_TOKENS", field="llm_context_window")
    return budget


@dataclass
class PackedContext:
    sources: list[Source]
    budget: int
    used: int = 0
    trimmed: list[int] = field(default_factory=list)  # numbers of the sources cut at a sentence end
    left_out: int = 0  # hits not given to the model (over max_sources or the budget)
    hits: list[Hit] = field(default_factory=list)  # what was packed from (question-focused when on)

    def info(self) -> dict[str, object]:
        return {"budget_tokens": self.budget, "used_tokens": self.used, "sources": len(self.sources),
                "trimmed": list(self.trimmed), "left_out": self.left_out}


def pack_context(hits: Sequence[Hit], *, budget: int, max_sources: int, lang: str = "en",
                 estimate: Callable[[str], int] = estimate_tokens) -> PackedContext:
    """Number and pack hits (in the given order) into `budget` tokens, at most `max_sources`."""
    packed = PackedContext([], budget, hits=list(hits))
    for hit in hits:
        remaining = budget - packed.used
        if len(packed.sources) >= max_sources or remaining < MIN_SOURCE_TOKENS:
            break
        number = len(packed.sources) + 1
        chunk = hit.chunk
        cost = estimate(source_block(number, chunk, chunk.text, lang)) + 2
        text: str | None = chunk.text
        if cost > remaining:
            text = _trim_to_fit(number, chunk, remaining, lang, estimate)
            if text is None:
                continue
            cost = estimate(source_block(number, chunk, text, lang)) + 2
            packed.trimmed.append(number)
        packed.sources.append(to_source(number, hit, text))
        packed.used += cost
    packed.left_out = len(hits) - len(packed.sources)
    return packed


def _trim_to_fit(number: int, chunk: Chunk, remaining: int, lang: str,
                 estimate: Callable[[str], int]) -> str | None:
    """The longest run of whole sentences from the chunk start that fits, or None."""
    best: str | None = None
    for _, end in split_sentences(chunk.text):
        candidate = chunk.text[:end]
        if estimate(source_block(number, chunk, candidate, lang)) + 2 > remaining:
            break
        best = candidate
    return best
