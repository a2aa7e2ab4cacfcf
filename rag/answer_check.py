"""Does the answer address the question? Checks run after citation verification, which only
asks whether each sentence is found in a source — a sentence copied from a passage on the
wrong year, or one that never states what was asked, passes it.

- focus: what the question asks for (`time`, `number`, `person`, `place`, `other`), from its
  interrogative words in English and Chinese;
- a `time` question's answer must state a date, a time expression or a condition ("when the
  battery is low"), a `number` question's a number (digits or number words);
- every number the answer states must be written in a source or in the question (no invented
  figures; "1,313" = "1313", "05" = "5");
- a question that names a year or an edition must not be answered from sources that state only
  other years (editions): "Who won in 2019?" answered from the 2018 passage;
- the answer must say something the question does not (not only restate it), unless the
  question offers a choice ("single- or double-stranded?");
- the cited sources must be about what the question asks: they state at least `min_coverage` of
  the question's subject terms, weighted as the context focus weighs them (rarer among the
  sources counts more; words that only shape a question, "who", "called", "又叫", and single
  Chinese characters, "曾", "过", count nothing). An answer copied from a passage on another
  subject shares few of them ("Who wrote X?" answered from a passage on Y). Not judged when the
  question and the cited sources are in different languages.
A failed check turns the answer into the refusal with `refusal_reason` "off_topic_answer" and
the check's reason in `info["answer_check"]` (setting `answer_check`). `check_sources` applies the
last test to all the retrieved sources before the model is called."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.citations import strip_markers
from rag.focus import figures, mismatch, question_markers, term_weights
from rag.generation import sources_from_hits
from rag.text import detect_language, has_cjk, normalize, tokenize
from rag.types import Citation, Hit, Source

FOCI = ("time", "number", "person", "place", "other")

# order matters: "how many years" asks for a number, "in which year" for a time
_FOCUS_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("number", re.compile(r"\bhow (many|much|long|old|far|big|large|high|tall|fast)\b|\bwhat (percentage|"
                          r"proportion|fraction|share|number|amount|rate|ratio)\b|\bwhat is the (number|rate|size|"
                          r"percentage|amount|cost|price|incidence|prevalence)\b")),
    ("number", re.compile(r"(?<!或)多少|几[个种次年天人名岁位家项条座部本届倍月周期层]|(?<![许很众诸较更最好大])多[大长久高重远]|"
                          r"比例|百分之|几成")),
    ("time", re.compile(r"\bwhen\b|\b(what|which|in what|in which) (year|date|month|day|decade|century|time)\b|"
                        r"\bsince when\b|\bhow recently\b")),
    ("time", re.compile(r"什么时候|何时|哪一?年|哪一?天|几月|几号|什么时间|哪个朝代|何年|哪个时期|哪个年代")),
    ("person", re.compile(r"\b(who|whom|whose)\b|谁|哪位|什么人")),
    ("place", re.compile(r"\bwhere\b|\b(which|what) (country|city|state|province|region|place|continent)\b|"
                         r"哪里|哪儿|什么地方|哪个国家|哪座城市|哪国|在哪|哪个城市|哪个省")),
)

_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec").split()
_TIME_WORDS = ("century centuries decade decades year years era dynasty period ago today yesterday tomorrow "
               "morning evening night spring summer autumn fall winter week weeks month months day days monday "
               "tuesday wednesday thursday friday saturday sunday bc ad hour hours minute minutes "
               # a condition answers "when" too ("when the battery falls low", "after the first dose")
               "when if after before once until while during upon whenever").split()
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
                 "hundreds thousand thousands million millions billion billions trillion dozen dozens half quarter "
                 "third twice double triple single once percent several few").split()
_EN_TIME_RE = re.compile(r"\b(" + "|".join(_MONTHS + _TIME_WORDS) + r")\b")
_EN_NUMBER_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b")
_ZH_NUMERAL = "零〇一二三四五六七八九十百千万亿两半数几"
_ZH_TIME_RE = re.compile(f"[{_ZH_NUMERAL}]|[年月日世纪朝代期间时季初末旬前后当]")
_ZH_NUMBER_RE = re.compile(f"[{_ZH_NUMERAL}]")
# "single- or double-stranded?", "是A还是B": the answer picks words of the question
_CHOICE_RE = re.compile(r"\bor\b|还是|或者")
# words that shape a question rather than name its subject: a source need not state them
_QUESTION_WORDS = frozenset(tokenize(
    "some other others any many much main known called call name named names kind kinds type types "
    "use used also according describe described mean meaning example examples "
    # what is asked of the documents ("summarise the report", "list the main points")
    "summarize summarise summary overview list compare comparison difference differences main key point points "
    "document documents paper article text passage file section report chapter page "
    "总结 概括 概述 列出 列举 比较 区别 文档 文章 文件 论文 报告 章节 本文 "
    "谁 哪里 哪儿 哪条 哪位 哪种 哪年 哪一年 哪国 哪家 哪一个 什么时候 何时 何种 何地 怎样 是否 "
    "又 叫 叫做 称为 被称为 称作 因 为 由 给 所 其 主要 一些 名字 名称 方面 等 多长 多久 多大 多高 多远 多重 多少 几",
    stopwords=False))
# "how long / old / far ... ": the adjective shapes the question ("How long is the warranty?")
_HOW_RE = re.compile(r"\bhow\s+\w+")
_MIN_MISSING = 2  # subject terms the cited sources must miss before coverage is judged


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    focus: str
    reason: str | None = None  # why it failed: missing_time, missing_number, number_not_in_sources, ...
    detail: str = ""

    def info(self) -> dict[str, object]:
        out: dict[str, object] = {"ok": self.ok, "focus": self.focus}
        if self.reason:
            out["reason"] = self.reason
        if self.detail:
            out["detail"] = self.detail
        return out


def question_focus(question: str) -> str:
    text = normalize(question)
    for focus, pattern in _FOCUS_RULES:
        if pattern.search(text):
            return focus
    return "other"


def has_time(text: str) -> bool:
    text = normalize(text)
    return bool(re.search(r"\d", text) or _EN_TIME_RE.search(text) or _ZH_TIME_RE.search(text))


def has_number(text: str) -> bool:
    text = normalize(text)
    return bool(re.search(r"\d", text) or _EN_NUMBER_RE.search(text) or _ZH_NUMBER_RE.search(text))


def check_answer(question: str, answer: str, sources: Sequence[Source],
                 citations: Sequence[Citation] = (), min_coverage: float = 0.0) -> CheckResult:
    """Whether `answer` (markers allowed) addresses `question` given the sources it was written
    from; `min_coverage` > 0 also asks that the cited sources be about the question
    (`question_coverage`)."""
    focus = question_focus(question)
    plain = strip_markers(answer)
    if focus == "time" and not has_time(plain):
        return CheckResult(False, focus, "missing_time", "the question asks when; the answer states no date or time")
    if focus == "number" and not has_number(plain):
        return CheckResult(False, focus, "missing_number", "the question asks how many; the answer states no number")
    written = set().union(*(figures(_source_text(s)) for s in sources), figures(question))
    invented = sorted(figures(plain) - written)
    if invented:
        return CheckResult(False, focus, "number_not_in_sources", f"not in any source: {', '.join(invented[:5])}")
    cited = {c.source_number for c in citations}
    used = [s for s in sources if s.number in cited] or list(sources)
    markers = question_markers(question)
    if markers:
        if mismatch(markers, " ".join(_source_text(s) for s in used)):
            wanted = ", ".join(sorted(markers.years | markers.editions))
            return CheckResult(False, focus, "year_mismatch", f"the cited sources do not state {wanted}")
    if not _CHOICE_RE.search(normalize(question)) and not set(tokenize(plain)) - set(tokenize(question)):
        return CheckResult(False, focus, "restates_question", "the answer only repeats the question")
    if min_coverage > 0:
        # the sources the answer stands on: those of its supported citations when it has any
        backed = {c.source_number for c in citations if c.supported}
        coverage = question_coverage(question, sources, [s for s in sources if s.number in backed] or used)
        if coverage is not None and coverage < min_coverage:
            return CheckResult(False, focus, "question_not_covered",
                               f"the cited sources state {coverage:.0%} of the question's terms "
                               f"(under {min_coverage:.0%})")
    return CheckResult(True, focus)


def check_sources(question: str, sources: Sequence[Source], min_coverage: float) -> CheckResult:
    """Before an answer is written: whether the retrieved `sources` together are about the
    question. When all of them together state under `min_coverage` of its subject terms, any
    answer citing some of them fails `check_answer`'s coverage test, so the model need not be
    called. Judged only when every source is in the question's language (in a mixed collection
    the one in the other language may be the relevant one, and shared words cannot tell)."""
    focus = question_focus(question)
    texts = {s.number: _source_text(s) for s in sources}
    language = detect_language(question)
    if min_coverage <= 0 or not texts or any(detect_language(t) != language for t in texts.values()):
        return CheckResult(True, focus)
    coverage = _coverage(question, texts, list(texts.values()))
    if coverage is not None and coverage < min_coverage:
        return CheckResult(False, focus, "question_not_covered",
                           f"the retrieved sources state {coverage:.0%} of the question's terms "
                           f"(under {min_coverage:.0%})")
    return CheckResult(True, focus)


def question_coverage(question: str, sources: Sequence[Source], cited: Sequence[Source]) -> float | None:
    """The weighted share of the question's subject terms that the `cited` sources state, each
    term weighted by how rare it is among all the `sources` (`rag.focus.term_weights`; a term no
    source states weighs as one that a single source states, so one paraphrased word, "rules"
    for "must", does not sink a short question; question words and single Chinese characters are
    left out). A Chinese term counts as stated when its characters appear (jieba may cut "初华堡"
    where the source has "华堡"). 1.0 when the cited sources miss fewer than two terms; None when
    it cannot be judged: no subject terms, or no cited source is in the question's language (an
    English question on Chinese documents)."""
    texts = {s.number: _source_text(s) for s in sources}
    return _coverage(question, texts, [texts.get(s.number) or _source_text(s) for s in cited])


def sources_about(question: str, sources: Sequence[Source], min_coverage: float) -> list[Source]:
    """The `sources`, in their order, that each alone state at least `min_coverage` of the
    question's subject terms (weighted over all of them, as `question_coverage` weighs), and those
    whose coverage cannot be judged (another language, no subject terms). An answer citing only
    sources left out fails `check_answer`'s coverage test, unless it cites several that fill each
    other's gaps."""
    texts = {s.number: _source_text(s) for s in sources}
    kept = []
    for s in sources:
        coverage = _coverage(question, texts, [texts[s.number]])
        if coverage is None or coverage >= min_coverage:
            kept.append(s)
    return kept


def hits_about(question: str, hits: Sequence[Hit], min_coverage: float) -> list[Hit]:
    """`sources_about` for retrieved hits: those, in their order, whose text is about the question."""
    return [hits[s.number - 1] for s in sources_about(question, sources_from_hits(hits), min_coverage)]


def candidate_coverage(question: str, answer: str, source: Source, sources: Sequence[Source]) -> float | None:
    """The weighted share of the question's subject terms (weighted over all the `sources`, as
    `question_coverage` weighs them) that one candidate answer states together with the `source`
    it stands on, every missing term counted (one missing term is not forgiven here: candidates
    are compared, not gated). None when it cannot be judged. map_rerank ranks candidates by it."""
    texts = {s.number: _source_text(s) for s in sources}
    return _coverage(question, texts, [texts.get(source.number) or _source_text(source), strip_markers(answer)],
                     min_missing=1)


def _coverage(question: str, texts: dict[int, str], cited: Sequence[str],
              min_missing: int = _MIN_MISSING) -> float | None:
    """`question_coverage` over the sources' texts (`_source_text`), built once by the caller;
    1.0 when fewer than `min_missing` terms are missing."""
    subject = _HOW_RE.sub(" ", normalize(question))
    weights = {term: weight for term, weight in term_weights(subject, list(texts.values()), min_df=1).items()
               if term not in _QUESTION_WORDS and not (len(term) == 1 and has_cjk(term))}
    language = detect_language(question)
    stated = " ".join(t for t in cited if detect_language(t) == language)
    if not weights or not stated:
        return None
    plain = normalize(stated)
    tokens = set(tokenize(stated, stopwords=False))
    found = {term for term in weights if term in tokens or (has_cjk(term) and term in plain)}
    if len(weights) - len(found) < min_missing:
        return 1.0
    return sum(weights[t] for t in found) / sum(weights.values())


def _source_text(source: Source) -> str:
    page = "" if source.page is None else str(source.page)
    return " ".join([source.title or "", source.source, *source.section_path, page, source.text])
