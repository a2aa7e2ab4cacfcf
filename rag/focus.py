"""What the model reads: the retrieved hits made into a question-focused context.

Three steps, each switchable (settings `context_dedupe`, `match_years`, `context_focus`):
- near-duplicate passages (the same text ingested twice, overlapping chunks) are collapsed to
  the better-ranked one, so five sources are five different passages;
- a question that names a year or an edition ("the 2019 winner", "第53届") puts the passages that
  state it first and those that only state other years last: the small model otherwise answers
  from a hard negative of another year that shares every other word;
- each passage is cut to the contiguous run of whole sentences, within a token budget, that
  holds the most of the question's terms (not for summary, list and comparison questions, which
  read passages whole) (weighted by how rare they are among the passages;
  numbers and years weigh double). Whole sentences keep dates and numbers intact, and a
  contiguous run keeps the source's character span exact for citations.
The embedded model reads a third of the text and answers faster (issue 16's time to first token)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from rag.text import normalize, split_sentences, tokenize
from rag.types import Chunk, Hit

YEAR_RE = re.compile(r"(?<![\d.])(1[5-9]\d\d|20\d\d)(?![\d.])")
_EN_ORDINAL_RE = re.compile(r"\b(\d{1,3})(?:st|nd|rd|th)\b", re.IGNORECASE)
_ZH_ORDINAL_RE = re.compile(r"第\s*([0-9]{1,3}|[一二三四五六七八九十百零〇两]{1,5})\s*(?:届|次|版|期|季|任|代|个|名)")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
# questions that want the whole of the passages, not the sentences around their terms
_OVERVIEW_RE = re.compile(r"\b(summar\w*|overview|outline|list (all|every|the)|what are (all|the main)|compare|"
                          r"differences?)\b|总结|概括|概述|归纳|列出|列举|有哪些|比较|区别")
DUPLICATE_OVERLAP = 0.9  # share of a passage's distinct tokens found in a better one that makes it a duplicate


@dataclass(frozen=True)
class QuestionMarkers:
    """Years and editions the question names, normalised (`2019`, `53`)."""

    years: frozenset[str]
    editions: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.years or self.editions)


def question_markers(question: str) -> QuestionMarkers:
    """The years and editions a text names (a question's, or a passage's to compare with them)."""
    text = normalize(question)
    years = frozenset(YEAR_RE.findall(text))
    editions = {m for m in _EN_ORDINAL_RE.findall(text)}
    editions.update(_zh_number(m) for m in _ZH_ORDINAL_RE.findall(text))
    return QuestionMarkers(years, frozenset(e for e in editions if e))


def mismatch(question: QuestionMarkers, text: str) -> bool | None:
    """True when the text states years (editions) but none of the question's, False when it
    states one of them, None when it says nothing either way."""
    if not question:
        return None
    found = question_markers(text)
    verdicts = []
    if question.years and found.years:
        verdicts.append(not (question.years & found.years))
    if question.editions and found.editions:
        verdicts.append(not (question.editions & found.editions))
    if not verdicts:
        return None
    return all(verdicts)


def order_by_markers(hits: Sequence[Hit], question: QuestionMarkers) -> tuple[list[Hit], int]:
    """Hits that state the question's year/edition first, then those that say nothing, then
    those that state only others (each group in its ranked order); and how many were moved back."""
    if not question:
        return list(hits), 0
    groups: dict[bool | None, list[Hit]] = {False: [], None: [], True: []}
    for hit in hits:
        groups[mismatch(question, _full_text(hit.chunk))].append(hit)
    return [*groups[False], *groups[None], *groups[True]], len(groups[True])


def dedupe(hits: Sequence[Hit], overlap: float = DUPLICATE_OVERLAP) -> tuple[list[Hit], int]:
    """Drop a hit whose text, normalised, is that of a better-ranked kept hit, or (same document:
    overlapping chunks) whose distinct tokens are almost all in one. Two documents that differ in
    a few words (versions of a policy: "two days" vs "three days") are both kept."""
    kept: list[tuple[Hit, set[str], str]] = []
    for hit in hits:
        text = " ".join(normalize(hit.chunk.text).split())
        tokens = set(tokenize(text, stopwords=False))
        if any(text == other_text or (hit.chunk.doc_id == other.chunk.doc_id and tokens
                                       and len(tokens & other_tokens) >= overlap * len(tokens))
               for other, other_tokens, other_text in kept):
            continue
        kept.append((hit, tokens, text))
    return [h for h, _, _ in kept], len(hits) - len(kept)


def term_weights(question: str, texts: Sequence[str], min_df: float = 0.0) -> dict[str, float]:
    """The question's content tokens, weighted by inverse frequency among `texts` (numbers and
    years double); a term held by fewer than `min_df` texts weighs as one held by `min_df`."""
    terms = set(tokenize(question))
    if not terms:
        return {}
    docs = [set(tokenize(t, stopwords=False)) for t in texts]
    n = len(docs)
    weights = {}
    for term in terms:
        df = max(sum(term in d for d in docs), min_df)
        weight = math.log((n + 1) / (df + 0.5)) + 1.0
        weights[term] = weight * (2.0 if any(c.isdigit() for c in term) else 1.0)
    return weights


def best_window(text: str, weights: dict[str, float], max_tokens: int,
                estimate: Callable[[str], int]) -> tuple[int, int]:
    """(start, end) in `text` of the contiguous whole sentences within `max_tokens` that hold
    the most question-term weight (distinct terms); ties go to the earlier window. The whole
    text when it fits. A first sentence longer than the budget is kept whole (never cut)."""
    if estimate(text) <= max_tokens:
        return 0, len(text)
    if not weights:
        return _lead(text, max_tokens, estimate)
    spans = split_sentences(text)
    if not spans:
        return 0, len(text)
    sentence_terms = [set(tokenize(text[s:e], stopwords=False)) & weights.keys() for s, e in spans]
    costs = [estimate(text[s:e]) + 1 for s, e in spans]
    best = (-1.0, 0, 0)
    for i in range(len(spans)):
        covered: set[str] = set()
        used = 0
        for j in range(i, len(spans)):
            if j > i and used + costs[j] > max_tokens:
                break
            used += costs[j]
            covered |= sentence_terms[j]
            score = sum(weights[t] for t in covered)
            if score > best[0] + 1e-9:
                best = (score, i, j)
    _, i, j = best
    if best[0] <= 0:
        return _lead(text, max_tokens, estimate)
    # fill what is left of the budget with the next sentences (an answer often follows its cue),
    # then with the ones before
    used = sum(costs[i : j + 1])
    while j + 1 < len(spans) and used + costs[j + 1] <= max_tokens:
        j += 1
        used += costs[j]
    while i > 0 and used + costs[i - 1] <= max_tokens:
        i -= 1
        used += costs[i]
    return spans[i][0], spans[j][1]


def _lead(text: str, max_tokens: int, estimate: Callable[[str], int]) -> tuple[int, int]:
    spans = split_sentences(text)
    if not spans:
        return 0, len(text)
    end = spans[0][1]
    for s, e in spans[1:]:
        if estimate(text[spans[0][0]:e]) > max_tokens:
            break
        end = e
    return spans[0][0], end


def focus_hits(question: str, hits: Sequence[Hit], max_tokens: int,
               estimate: Callable[[str], int]) -> tuple[list[Hit], int]:
    """Each hit's chunk cut to its best window (`best_window`) of `max_tokens`; the chunk's offsets
    follow the cut when they are exact (end - start == len(text)). Returns the hits and how many
    were cut."""
    weights = term_weights(question, [h.chunk.text for h in hits])
    out, cut = [], 0
    for hit in hits:
        chunk = hit.chunk
        if chunk.kind == "qa":  # an imported question/answer pair is read whole
            out.append(hit)
            continue
        start, end = best_window(chunk.text, weights, max_tokens, estimate)
        if (start, end) == (0, len(chunk.text)):
            out.append(hit)
            continue
        out.append(replace(hit, chunk=_cut(chunk, start, end)))
        cut += 1
    return out, cut


def _cut(chunk: Chunk, start: int, end: int) -> Chunk:
    exact = chunk.end - chunk.start == len(chunk.text)
    return replace(chunk, text=chunk.text[start:end],
                   start=chunk.start + start if exact else chunk.start,
                   end=chunk.start + end if exact else chunk.end)


def _full_text(chunk: Chunk) -> str:
    return " ".join([chunk.title or "", chunk.source, *chunk.section_path, chunk.text])


def numbers_in(text: str) -> set[str]:
    """Digit runs of a text, thousands separators dropped ("1,313" -> "1313")."""
    return {m.replace(",", "") for m in _NUMBER_RE.findall(normalize(text))}


_EN_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_EN_NUMBER_WORDS.update({w: 10 * i for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)})
_EN_NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(w for w in _EN_NUMBER_WORDS if w not in ("zero", "one")) + r")\b")
# a Chinese numeral with a measure word after it ("十五天", "两年"); a lone 一 is too common to count
_ZH_FIGURE_RE = re.compile(r"([零〇一二三四五六七八九十百两]+)(?=[天年月日周个人名岁次位家项条座部本届倍种分元万亿%])")


def figures(text: str) -> set[str]:
    """The figures a text states, each in one canonical form: digit runs ("1,313" -> "1313",
    "05" -> "5", "2.50" -> "2.5"), English number words from two ("five" -> "5") and Chinese
    numerals before a measure word ("十五天" -> "15")."""
    text = normalize(text)
    out = {_canonical(n) for n in numbers_in(text)}
    out.update(str(_EN_NUMBER_WORDS[w]) for w in _EN_NUMBER_WORD_RE.findall(text))
    for run in _ZH_FIGURE_RE.findall(text):
        value = _zh_number(run)
        if value and run != "一":
            out.add(value)
    return out


def _canonical(number: str) -> str:
    whole, dot, frac = number.partition(".")
    if not whole.isdigit():
        return number
    whole = str(int(whole))
    frac = frac.rstrip("0") if frac.isdigit() else frac
    return f"{whole}.{frac}" if dot and frac else whole


_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def _zh_number(text: str) -> str:
    """"53" or "五十三" -> "53" (up to the hundreds); "" when not a number."""
    if text.isdigit():
        return str(int(text))
    total, current = 0, 0
    for char in text:
        if char in _ZH_DIGITS:
            current = _ZH_DIGITS[char]
        elif char == "十":
            total += (current or 1) * 10
            current = 0
        elif char == "百":
            total += (current or 1) * 100
            current = 0
        else:
            return ""
    return str(total + current)


def prepare_context(question: str, hits: Sequence[Hit], *, dedupe_on: bool, match_years: bool, focus_on: bool,
                    focus_tokens: int, estimate: Callable[[str], int]) -> tuple[list[Hit], dict[str, int]]:
    """The three steps of the module docstring, each when switched on; what each changed."""
    out, info = list(hits), {}
    if dedupe_on:
        out, info["duplicates_dropped"] = dedupe(out)
    if match_years:
        out, info["other_year_moved_back"] = order_by_markers(out, question_markers(question))
    if focus_on and not asks_for_overview(question):
        out, info["focused"] = focus_hits(question, out, focus_tokens, estimate)
    return out, {k: v for k, v in info.items() if v}


def asks_for_overview(question: str) -> bool:
    """"Summarise ...", "list every ...", "compare ...", "总结 ...", "有哪些 ...": passages are read whole."""
    return _OVERVIEW_RE.search(normalize(question)) is not None
