"""Query understanding with the configured LLM: condensing a conversation into a standalone
question (checked: when the model's rewrite loses the follow-up or its subject, the follow-up as
asked is answered from a search with the previous question), and the query transforms (rewrite,
multi_query, hyde, step_back, sub_question) that turn one question into several retrieval variants.

Every LLM call degrades gracefully: on an LLM or model error the step logs a warning, records
the error in `info` and retrieval goes on with what it has (at least the original question)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag import prompts
from rag.errors import RagError
from rag.protocols import LLM
from rag.names import BM25, DENSE, HYBRID, LISTS
from rag.settings import TRANSFORMS
from rag.text import detect_language, tokenize

log = logging.getLogger(__name__)

_BULLET = re.compile(r"^\s*(?:[-*•·>]+|\(?\d{1,2}[.)、:：]|[qQ]\d{1,2}[.):：]|#+)\s*")
_QUOTES = "\"'“”‘’「」『』`"
_MARKERS = re.compile(r"\s*(?:\[\d+(?:\s*[,，]\s*\d+)*\]|【\d+】)")
_MAX_VARIANT_CHARS = 600


@dataclass(frozen=True)
class Variant:
    """One query sent to retrieval: its label, text, the lists it feeds and its RRF weight factor."""

    label: str  # "original", "rewrite", "multi_query:1", "hyde", "step_back", "sub_question:1"
    text: str
    lists: tuple[str, ...] = LISTS  # every retrieval list (rag/names.py)
    weight: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "text": self.text, "lists": list(self.lists)}


@dataclass
class TransformLog:
    """What each transform did, for `info["transforms"]` and the warnings list."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def question_language(question: str, history: Sequence[dict[str, str]] = ()) -> str:
    """The question's language; a question without letters (e.g. "？") takes the conversation's."""
    if re.search(r"[A-Za-z\u3400-\u9fff]", question) or not history:
        return detect_language(question)
    return detect_language(" ".join(m.get("content", "") for m in history[-2:]))


def clean_line(line: str) -> str:
    """Strip numbering, bullets, an echoed "Question:" label and surrounding quotes."""
    text = _BULLET.sub("", line.strip())
    match = re.match(r"^([^:：]{1,30})[:：]\s*(.*)$", text)
    if match and match.group(1).strip().strip(_QUOTES + "*").strip().lower() in prompts.ECHO_PREFIXES:
        text = match.group(2)
    return text.strip().strip(_QUOTES + "*").strip()


def reply_lines(reply: str) -> list[str]:
    return [c for c in (clean_line(line) for line in reply.splitlines()) if c]


def conversation_query(question: str, history: Sequence[dict[str, str]] | None, turns: int = 2) -> str:
    """The last `turns` user messages, then the question: the reranker's query (two turns) and the
    condensing fallback (one turn), which needs no LLM and cannot lose what was asked."""
    users = [m["content"].strip() for m in history or () if m.get("role") == "user" and m.get("content", "").strip()]
    return "\n".join([*users[-turns:], question.strip()]) if users else question.strip()


def rewrite_problem(question: str, rewrite: str, history: Sequence[dict[str, str]]) -> str | None:
    """Why an LLM rewrite of a follow-up cannot stand for it, or None. It must keep at least half
    of the follow-up's own content words (BM25 terms), and, unless the follow-up already shares
    a word with the user's earlier messages, at least one of those (the subject: the assistant's
    replies are not counted, they mention much that was not asked about)."""
    own = set(tokenize(question))
    kept = set(tokenize(rewrite))
    if own and 2 * len(own & kept) < len(own):
        return f"the rewrite drops the follow-up's own words ({', '.join(sorted(own - kept))})"
    earlier = set(tokenize(" ".join(m.get("content", "") for m in history if m.get("role") == "user")))
    if earlier and not own & earlier and not kept & earlier:
        return "the rewrite keeps no word of the conversation"
    return None


@dataclass(frozen=True)
class Condensed:
    """A follow-up made standalone: `question` is what the answer answers, `query` what retrieval
    searches (the same, unless the model's rewrite was rejected: then the follow-up as asked is
    answered from what the previous question and the follow-up together retrieve)."""

    question: str
    query: str


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


class QueryTransformer:
    """Runs condensing and transforms. `llm` is the model or a zero-argument function returning
    it, so a model is only resolved when a transform really runs."""

    def __init__(self, llm: LLM | Callable[[], LLM], *, multi_query_n: int = 3, sub_question_n: int = 4,
                 history_messages: int = 6, temperature: float = 0.0) -> None:
        self._llm = llm
        self.multi_query_n = multi_query_n
        self.sub_question_n = sub_question_n
        self.history_messages = history_messages
        self.temperature = temperature

    def _model(self) -> LLM:
        return self._llm() if callable(self._llm) else self._llm  # a model object is not callable

    def _ask(self, name: str, msgs: list[dict[str, str]], max_tokens: int, log_: TransformLog) -> str | None:
        """One LLM call; None (and a warning) when the model fails."""
        started = time.perf_counter()
        try:
            reply = self._model().chat(msgs, max_tokens=max_tokens, temperature=self.temperature)
        except RagError as exc:
            message = f"{name} skipped: {exc.message}"
            log.warning("query transform %s", message)
            log_.warnings.append(message)
            log_.steps[name] = {"ok": False, "error": exc.message, "seconds": time.perf_counter() - started}
            return None
        log_.steps[name] = {"ok": True, "seconds": time.perf_counter() - started}
        return reply

    # -- multi-turn ------------------------------------------------------------------------
    def condense(self, question: str, history: Sequence[dict[str, str]], lang: str,
                 log_: TransformLog) -> Condensed:
        """A follow-up made standalone: the model's rewrite, answered and searched, unless
        `rewrite_problem` rejects it (or the model fails); then the follow-up as asked is answered
        from what the previous user message and the follow-up together retrieve
        (`conversation_query`: that combined text as the question made the model answer the
        previous question). The question itself when there is no history. The rewrite alone, the
        previous-question query alone and both fused were measured and removed (docs/benchmarks.md,
        "Follow-ups")."""
        if not history:
            return Condensed(question, question)
        rewrite = self._rewrite(question, history, lang, log_)
        problem = "the model gave no usable question" if rewrite is None else rewrite_problem(question, rewrite,
                                                                                               history)
        if problem is None:
            return Condensed(rewrite, rewrite)
        query = conversation_query(question, history, turns=1)
        log_.steps.setdefault("condense", {}).update(rejected=rewrite, reason=problem, output=question, query=query)
        log_.warnings.append(f"condense: {problem}; answering the follow-up from the previous question's search")
        return Condensed(question, query)

    def _rewrite(self, question: str, history: Sequence[dict[str, str]], lang: str, log_: TransformLog) -> str | None:
        """The model's standalone question, or None when it fails or answers with nothing usable."""
        speaker = {"user": "User", "assistant": "Assistant"} if lang != "zh" else {"user": "用户", "assistant": "助手"}
        lines = []
        for message in history[-self.history_messages:]:
            content = _MARKERS.sub("", message.get("content", "")).strip().replace("\n", " ")
            if content:
                lines.append(f"{speaker.get(message.get('role', 'user'), 'User')}: {content[:600]}")
        if not lines:
            return None
        reply = self._ask("condense", prompts.messages(prompts.CONDENSE, lang, history="\n".join(lines),
                                                       question=question), 128, log_)
        candidates = reply_lines(reply or "")
        standalone = candidates[0] if candidates else ""
        if not standalone or len(standalone) > max(4 * len(question), 400):
            if reply is not None:
                log_.warnings.append("condense returned no usable question")
                log_.steps["condense"]["ok"] = False
            return None
        log_.steps["condense"]["output"] = standalone
        return standalone

    # -- transforms ------------------------------------------------------------------------
    def expand(self, question: str, names: Sequence[str], lang: str, log_: TransformLog, *,
               original_weight: float = 1.0, mode: str = HYBRID) -> list[Variant]:
        """The original question plus the variants of each requested transform, in a fixed
        order (rewrite first: the others work on the rewritten question)."""
        unknown = [n for n in names if n not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}")
        variants = [Variant("original", question, LISTS, original_weight)]
        base = question
        if "rewrite" in names:
            reply = self._ask("rewrite", prompts.messages(prompts.REWRITE, lang, question=question), 96, log_)
            lines = reply_lines(reply or "")
            if lines:
                base = lines[0][:_MAX_VARIANT_CHARS]
                variants.append(Variant("rewrite", base))
                log_.steps["rewrite"]["output"] = base
        if "multi_query" in names:
            n = self.multi_query_n
            reply = self._ask("multi_query", prompts.messages(prompts.MULTI_QUERY, lang, question=base, n=n),
                              48 * n + 32, log_)
            queries = reply_lines(reply or "")[:n]
            variants += [Variant(f"multi_query:{i}", q[:_MAX_VARIANT_CHARS]) for i, q in enumerate(queries, 1)]
        if "hyde" in names:
            if mode == BM25:
                log_.steps["hyde"] = {"ok": False, "error": "HyDE feeds the dense list only; mode is bm25"}
            else:
                reply = self._ask("hyde", prompts.messages(prompts.HYDE, lang, question=base), 200, log_)
                passage = " ".join(reply_lines(reply or ""))[:1500]
                if passage:
                    variants.append(Variant("hyde", passage, (DENSE,)))
        if "step_back" in names:
            reply = self._ask("step_back", prompts.messages(prompts.STEP_BACK, lang, question=base), 96, log_)
            lines = reply_lines(reply or "")
            if lines:
                variants.append(Variant("step_back", lines[0][:_MAX_VARIANT_CHARS]))
        if "sub_question" in names:
            n = self.sub_question_n
            reply = self._ask("sub_question", prompts.messages(prompts.SUB_QUESTION, lang, question=base, n=n),
                              48 * n + 32, log_)
            parts = reply_lines(reply or "")[:n]
            variants += [Variant(f"sub_question:{i}", q[:_MAX_VARIANT_CHARS]) for i, q in enumerate(parts, 1)]
        return _dedupe(variants, log_)


def _dedupe(variants: list[Variant], log_: TransformLog) -> list[Variant]:
    """Drop variants whose text repeats an earlier one with the same lists (case/punctuation-blind)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for v in variants:
        key = (_norm(v.text), v.lists)
        if not key[0] or key in seen:
            log_.steps.setdefault(v.label.split(":")[0], {}).setdefault("dropped_duplicates", 0)
            log_.steps[v.label.split(":")[0]]["dropped_duplicates"] += 1
            continue
        seen.add(key)
        out.append(v)
    for name, step in log_.steps.items():
        if name != "condense" and step.get("ok"):
            step["variants"] = [v.text for v in out if v.label.split(":")[0] == name]
    return out
