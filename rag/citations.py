"""Citations in generated answers: cleaning markers (also while streaming), mapping them to
the numbered sources, and attributing each to the sentence it supports.

Markers the model may write: `[1]`, `[1, 2]`, `[1][3]`, `[1-3]`, `[source 1]`, `【1】`, `[来源1]`.
The cleaned answer writes every valid marker as `[n]` (so `[1, 2]` becomes `[1][2]`) and drops
numbers that point at no source (with the space before the marker). The same `MarkerFilter`
runs over streamed deltas and over a whole answer, so the streamed text equals the final one.

Verification (`CitationVerifier`) scores each cited sentence against its cited source: an
embedding similarity to the best-matching sentence window of the source, calibrated by the
embedder's similarity between unrelated texts, averaged with the share of the sentence's words
found in the source; numbers absent from the source halve the score."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.errors import RagError
from rag.focus import figures
from rag.pages import cited_page
from rag.protocols import Embedder
from rag.text import split_sentences, tokenize
from rag.types import Citation, Source

log = logging.getLogger(__name__)

_OPEN_CLOSE = {"[": "]", "【": "】"}
_MAX_MARKER = 40
_PUNCT = set(".,;:!?。，；：！？、)）”’")
_PREFIX = r"(?:sources?|src|refs?|references?|docs?|documents?|passages?|来源|资料|出处|文档|参考)"
_ITEM = r"\^?\d{1,3}(?:\s*[-–~]\s*\d{1,3})?"
_BODY = re.compile(rf"^\s*(?:{_PREFIX}\s*[:：#]?\s*)?({_ITEM}(?:\s*[,，、;；\s]\s*(?:{_PREFIX}\s*)?{_ITEM})*)\s*$",
                   re.IGNORECASE)
_CLEAN_MARKER = re.compile(r"[ \t]*\[(\d{1,3})\]")


def marker_numbers(body: str) -> list[int] | None:
    """The numbers in a marker body ("1, 2", "source 3", "1-3"), or None if it is no citation."""
    match = _BODY.match(body)
    if not match:
        return None
    numbers: list[int] = []
    for item in re.findall(r"(\d{1,3})(?:\s*[-–~]\s*(\d{1,3}))?", match.group(1)):
        first = int(item[0])
        last = int(item[1]) if item[1] else first
        numbers.extend(range(first, min(last, first + 19) + 1) if last >= first else [first])
    return list(dict.fromkeys(numbers))


@dataclass
class MarkerFilter:
    """Incremental marker cleaner: `feed(delta)` returns the text that is final so far (a
    possible marker or trailing whitespace is held back), `flush()` the rest. Leading and
    trailing whitespace of the whole answer is dropped."""

    n_sources: int
    invalid: list[int] = field(default_factory=list)  # numbers removed, in order of appearance
    _ws: str = ""
    _marker: str = ""
    _after_removed: bool = False
    _started: bool = False

    def _take_ws(self, next_char: str) -> str:
        ws, self._ws = self._ws, ""
        if not self._started:
            return ""
        if self._after_removed:
            self._after_removed = False
            if "\n" in ws:
                return ws.lstrip(" \t")
            return "" if next_char in _PUNCT or next_char == "" else (" " if ws else "")
        return ws

    def _text(self, text: str) -> str:
        out = self._take_ws(text[:1]) + text
        self._started = True
        return out

    def _resolve(self) -> str:
        marker, self._marker = self._marker, ""
        numbers = marker_numbers(marker[1:-1])
        if numbers is None:
            return self._text(marker)
        valid = [n for n in numbers if 1 <= n <= self.n_sources]
        self.invalid.extend(n for n in numbers if not 1 <= n <= self.n_sources)
        if valid:
            return self._text("".join(f"[{n}]" for n in valid))
        self._after_removed = True
        return ""

    def feed(self, delta: str) -> str:
        out: list[str] = []
        for ch in delta:
            if self._marker:
                opener = self._marker[0]
                if ch == _OPEN_CLOSE[opener]:
                    self._marker += ch
                    out.append(self._resolve())
                    continue
                if ch in _OPEN_CLOSE or ch == "\n" or len(self._marker) >= _MAX_MARKER:
                    literal, self._marker = self._marker, ""
                    out.append(self._text(literal))  # not a marker after all
                else:
                    self._marker += ch
                    continue
            if ch in _OPEN_CLOSE:
                self._marker = ch
            elif ch.isspace():
                self._ws += ch
            else:
                out.append(self._text(ch))
        return "".join(out)

    def flush(self) -> str:
        out = self._text(self._marker) if self._marker else ""
        self._marker, self._ws = "", ""
        return out


def clean_answer(text: str, n_sources: int) -> tuple[str, list[int]]:
    """The answer with markers normalised and invalid numbers removed, and those numbers."""
    f = MarkerFilter(n_sources)
    return f.feed(text) + f.flush(), f.invalid


def strip_markers(text: str) -> str:
    return _CLEAN_MARKER.sub("", text).strip()


@dataclass
class Sentence:
    start: int  # offsets in the cleaned answer (markers included)
    end: int
    text: str  # without markers
    numbers: list[int]


def answer_sentences(answer: str) -> list[Sentence]:
    """Sentences of a cleaned answer, each with the source numbers cited for it. A marker
    belongs to the sentence it follows, also when it comes after the full stop ("... . [1]")."""
    plain_chars: list[str] = []
    to_answer: list[int] = []  # plain index -> answer index
    markers: list[tuple[int, int]] = []  # (plain position, number)
    pos = 0
    for match in _CLEAN_MARKER.finditer(answer):
        for i in range(pos, match.start()):
            plain_chars.append(answer[i])
            to_answer.append(i)
        markers.append((len(plain_chars), int(match.group(1))))
        pos = match.end()
    for i in range(pos, len(answer)):
        plain_chars.append(answer[i])
        to_answer.append(i)
    plain = "".join(plain_chars)
    spans = split_sentences(plain)
    sentences = [Sentence(to_answer[s], to_answer[e - 1] + 1, plain[s:e], []) for s, e in spans]
    for position, number in markers:
        index = max((i for i, (s, _) in enumerate(spans) if s < position), default=0)
        if sentences and number not in sentences[index].numbers:
            sentences[index].numbers.append(number)
    for index, sentence in enumerate(sentences):  # extend each span over its trailing markers
        limit = sentences[index + 1].start if index + 1 < len(sentences) else len(answer)
        tail = re.match(r"(?:\s*\[\d{1,3}\])+", answer[sentence.end:limit])
        if tail:
            sentence.end += tail.end()
    return sentences


def extract_citations(answer: str, sources: Sequence[Source]) -> list[Citation]:
    """One Citation per (sentence, cited source) of a cleaned answer, in reading order."""
    by_number = {s.number: s for s in sources}
    citations = []
    for sentence in answer_sentences(answer):
        for number in sentence.numbers:
            source = by_number.get(number)
            if source is not None:
                citations.append(Citation(number=number, sentence=sentence.text, sentence_start=sentence.start,
                                          sentence_end=sentence.end, source_number=number,
                                          chunk_id=source.chunk_id,
                                          page=cited_page(source.text, source.pages, sentence.text, source.page)))
    return citations


def uncited_sentences(answer: str, min_chars: int = 12) -> list[str]:
    """Sentences with no citation (short ones such as headings are ignored)."""
    return [s.text for s in answer_sentences(answer) if not s.numbers and len(s.text) >= min_chars]


# -- verification ----------------------------------------------------------------------------

CALIBRATION_TEXTS = (
    "The recipe needs two cups of flour and a pinch of salt.",
    "Quarterly revenue grew in the northern sales region.",
    "The train to the airport leaves every fifteen minutes.",
    "Photosynthesis turns light into chemical energy in plants.",
    "Please reset your password before the end of the month.",
    "The museum is closed on public holidays.",
    "这家餐厅的招牌菜是红烧肉。",
    "明天下午会有大雨，出门请带伞。",
)
_floors: dict[str, float] = {}


def _overlap(sentence: set[str], other: set[str]) -> float:
    return len(sentence & other) / len(sentence) if sentence else 0.0


class CitationVerifier:
    """Scores citations in place (`support` 0..1, `supported` when >= `min_support`). One
    batched `encode_corpus` call covers every cited sentence and the few source windows with
    the most word overlap (`windows` per citation); `embedder=None` scores words only."""

    def __init__(self, embedder: Embedder | None, min_support: float = 0.5, windows: int = 4) -> None:
        self.embedder = embedder
        self.min_support = min_support
        self.windows = windows

    def verify(self, citations: Sequence[Citation], sources: Sequence[Source]) -> dict[str, Any]:
        by_number = {s.number: s for s in sources}
        method = "embedding+lexical" if self.embedder is not None else "lexical"
        info: dict[str, Any] = {"method": method, "threshold": self.min_support, "checked": 0, "supported": 0}
        texts: dict[str, int] = {}
        jobs = []
        windows_of: dict[int, list[tuple[str, set[str]]]] = {}
        source_figures: dict[int, set[str]] = {}
        for citation in citations:
            source = by_number.get(citation.source_number)
            if source is None:
                continue
            if source.number not in windows_of:
                windows_of[source.number] = _windows(source.text)
            words = set(tokenize(citation.sentence))
            lexical = _overlap(words, set(tokenize(source.text))) if words else None
            ranked = sorted(windows_of[source.number], key=lambda w: -_overlap(words, w[1]))[: self.windows]
            ids = [texts.setdefault(w[0], len(texts)) for w in ranked]
            if source.number not in source_figures:
                source_figures[source.number] = figures(source.text)
            missing = sorted(figures(citation.sentence) - source_figures[source.number])
            jobs.append((citation, lexical, texts.setdefault(citation.sentence, len(texts)), ids, missing))
        semantic = self._semantic(list(texts), jobs, info) if jobs else None
        for i, (citation, lexical, _, _, missing) in enumerate(jobs):
            parts = [x for x in (lexical, semantic[i] if semantic is not None else None) if x is not None]
            support = sum(parts) / len(parts) if parts else 0.0
            if missing:
                support *= 0.5
            citation.support = round(support, 4)
            citation.supported = support >= self.min_support
        info["checked"] = len(jobs)
        info["supported"] = sum(1 for job in jobs if job[0].supported)
        return info

    def _semantic(self, texts: list[str], jobs: list, info: dict[str, Any]) -> list[float] | None:
        embedder = self.embedder
        if embedder is None:
            return None
        calibrate = embedder.name not in _floors
        try:
            vectors = embedder.encode_corpus(texts + (list(CALIBRATION_TEXTS) if calibrate else []))
        except RagError as exc:
            log.warning("citation check falls back to word overlap: %s", exc.message)
            info["method"] = "lexical"
            info["warning"] = exc.message
            return None
        vectors = np.asarray(vectors, dtype=np.float32)
        if calibrate:
            cal = vectors[len(texts):]
            sims = cal @ cal.T
            n = len(cal)
            _floors[embedder.name] = float((sims.sum() - np.trace(sims)) / (n * (n - 1)))
        floor = min(_floors[embedder.name], 0.95)
        info["embedder"], info["floor"] = embedder.name, round(floor, 4)
        out = []
        for _, _, sentence_id, window_ids, _ in jobs:
            best = max((float(vectors[sentence_id] @ vectors[w]) for w in window_ids), default=floor)
            out.append(min(max((best - floor) / (1.0 - floor), 0.0), 1.0))
        return out


def _windows(text: str) -> list[tuple[str, set[str]]]:
    """Sentence windows of a source (single sentences and adjacent pairs) with their words."""
    spans = split_sentences(text)
    if len(spans) <= 1:
        return [(text.strip(), set(tokenize(text)))]
    out = [text[s:e] for s, e in spans] + [text[a[0]:b[1]] for a, b in zip(spans, spans[1:])]
    return [(w, set(tokenize(w))) for w in out]


# -- attribution and grounding ---------------------------------------------------------------

MIN_CLAIM_WORDS = 3  # sentences with fewer distinct words ("Yes.", headings) are not claims


def claims(answer: str) -> list[Sentence]:
    """The sentences of a cleaned answer that state something checkable."""
    return [s for s in answer_sentences(answer) if len(set(tokenize(s.text))) >= MIN_CLAIM_WORDS]


def attribute(answer: str, citations: Sequence[Citation], sources: Sequence[Source], verifier: CitationVerifier,
              candidates: int = 2) -> tuple[list[Citation], dict[str, Any]]:
    """Ground every claim of the answer: a claim with no supported citation from the model is
    scored against the `candidates` sources sharing most words with it (ties: the more relevant
    source), and cited (origin "attributed") with the best one that reaches the verifier's
    threshold. Returns the new citations and {"claims", "supported_claims", "attributed"}.

    Small models often cite nothing or the wrong number; this keeps every statement traceable
    to the text that supports it, and tells a grounded answer from an invented one."""
    supported_at = {(c.sentence_start, c.sentence_end) for c in citations if c.supported}
    found = claims(answer)
    todo = [s for s in found if (s.start, s.end) not in supported_at]
    source_words = {s.number: set(tokenize(s.text)) for s in sources}
    trial: list[Citation] = []
    for sentence in todo:
        words = set(tokenize(sentence.text))
        ranked = sorted(sources, key=lambda src: (-_overlap(words, source_words[src.number]), src.number))
        trial.extend(Citation(number=src.number, sentence=sentence.text, sentence_start=sentence.start,
                              sentence_end=sentence.end, source_number=src.number, chunk_id=src.chunk_id,
                              origin="attributed", page=cited_page(src.text, src.pages, sentence.text, src.page))
                     for src in ranked[:candidates])
    if trial:
        verifier.verify(trial, sources)
    best: dict[tuple[int, int], Citation] = {}
    for citation in trial:
        key = (citation.sentence_start, citation.sentence_end)
        if citation.supported and (key not in best or (citation.support or 0) > (best[key].support or 0)):
            best[key] = citation
    added = sorted(best.values(), key=lambda c: c.sentence_start)
    info = {"claims": len(found), "supported_claims": len(supported_at & {(s.start, s.end) for s in found})
            + len(added), "attributed": len(added)}
    return added, info


@dataclass(frozen=True)
class Support:
    """How well sources back a text: `score` is the mean over its claims (over its sentences
    when it states no claim: "Two years [1].") of the best support any source gives each one
    (0..1, `CitationVerifier` scores); `supported` how many of them reach the verifier's threshold."""

    score: float
    supported: int
    claims: int


def support(text: str, sources: Sequence[Source], verifier: CitationVerifier, candidates: int = 2) -> Support:
    """Score every claim of a cleaned `text` against the sources it cites and the `candidates`
    sources sharing most words with it, in one verifier call (the citations scored are not kept)."""
    found = claims(text) or [s for s in answer_sentences(text) if tokenize(s.text)]
    if not found or not sources:
        return Support(0.0, 0, len(found))
    by_number = {s.number: s for s in sources}
    source_words = {s.number: set(tokenize(s.text)) for s in sources}
    trial: list[tuple[int, Citation]] = []
    for index, sentence in enumerate(found):
        words = set(tokenize(sentence.text))
        ranked = sorted(sources, key=lambda src: (-_overlap(words, source_words[src.number]), src.number))
        chosen = [by_number[n] for n in sentence.numbers if n in by_number]
        cited = {src.number for src in chosen}
        chosen += [src for src in ranked[:candidates] if src.number not in cited]
        trial.extend((index, Citation(number=src.number, sentence=sentence.text, sentence_start=sentence.start,
                                      sentence_end=sentence.end, source_number=src.number, chunk_id=src.chunk_id,
                                      origin="attributed",
                                      page=cited_page(src.text, src.pages, sentence.text, src.page)))
                     for src in chosen)
    verifier.verify([c for _, c in trial], sources)
    best = [0.0] * len(found)
    backed = [False] * len(found)
    for index, citation in trial:
        best[index] = max(best[index], citation.support or 0.0)
        backed[index] = backed[index] or bool(citation.supported)
    return Support(round(sum(best) / len(best), 4), sum(backed), len(found))


def mark_attributed(answer: str, citations: Sequence[Citation]) -> str:
    """The answer with a `[n]` marker for every attributed citation, at the end of its sentence
    (before the final full stop, after the model's own markers), for display."""
    text = answer
    for citation in sorted((c for c in citations if c.origin == "attributed"), key=lambda c: -c.sentence_end):
        if f"[{citation.source_number}]" in text[citation.sentence_start:citation.sentence_end]:
            continue
        at = citation.sentence_end
        while at > 0 and text[at - 1].isspace():
            at -= 1
        if at > 0 and text[at - 1] in ".!?。！？":
            at -= 1
        text = f"{text[:at]} [{citation.source_number}]{text[at:]}"
    return text
