"""Language-aware text helpers: BM25 tokenisation (jieba for Chinese, lowercased and
Snowball-stemmed words for English), language detection and sentence splitting with character
offsets.

`TOKENIZER` names the tokenisation: persisted indexes record it and are rebuilt when it changes.
Stemming ("infections", "infected" -> "infect") was measured on COVID-QA (1,380 questions,
answer-chunk level): BM25 MRR@10 0.571 -> 0.580 with 800-character chunks, 0.579 -> 0.595 with
1,000; hit@10 +0.02 in both."""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_RUN_RE = re.compile(f"[{_CJK}]+")
_WORD_RE = re.compile(r"[0-9a-z]+(?:[._'\-][0-9a-z]+)*")
# a sentence ends at 。！？；!?; or at a . followed by whitespace, and at line breaks
_SENT_END_RE = re.compile(r"(?:[。！？；!?;]+[”’」』)\]]*|\.(?=\s)|\n+)")

EN_STOPWORDS = frozenset(
    """a an and are as at be but by for from has have how if in into is it its of on or such that the their
    then there these they this to was were what when where which who whom why will with would do does did can
    could should may might been being than so not no nor""".split()
)
ZH_STOPWORDS = frozenset("的 了 和 是 在 也 有 就 都 而 及 与 着 或 一个 没有 我们 你们 他们 这 那 之 于 被 把 吗 呢 吧 啊 什么 哪 哪个 哪些 怎么 如何 为什么 多少 几".split())

TOKENIZER = "2:jieba-search+snowball-en"

_jieba_lock = threading.Lock()
_jieba_loaded = False


def jieba_ready():
    global _jieba_loaded
    import jieba  # lazy: loading the dictionary takes ~1 s

    if not _jieba_loaded:
        with _jieba_lock:
            if not _jieba_loaded:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_loaded = True
    return jieba


def has_cjk(text: str) -> bool:
    return _CJK_RE.search(text) is not None


def detect_language(text: str) -> str:
    """'zh' when a noticeable share of the letters are CJK, else 'en'."""
    cjk = len(_CJK_RE.findall(text))
    latin = len(re.findall(r"[A-Za-z]", text))
    return "zh" if cjk and cjk * 3 >= latin * 0.5 else "en"


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: the Snowball stemmers in C

    return Stemmer.Stemmer("english")


def _stem_words(words: list[str]) -> list[str]:
    return _stemmer().stemWords(words) if words else words


def tokenize(text: str, stopwords: bool = True) -> list[str]:
    """BM25 tokens: jieba words for CJK runs (search mode), lowercased alphanumeric words
    otherwise, Snowball-stemmed (English). Stop words and single CJK particles are dropped when
    `stopwords` is on (before stemming)."""
    text = normalize(text)
    tokens: list[str] = []
    pos = 0
    for match in _CJK_RUN_RE.finditer(text):
        tokens.extend(_words(text[pos : match.start()], stopwords))
        tokens.extend(t for t in _cut_cjk(match.group()) if not stopwords or t not in ZH_STOPWORDS)
        pos = match.end()
    tokens.extend(_words(text[pos:], stopwords))
    return tokens


def _words(text: str, stopwords: bool) -> list[str]:
    words = _WORD_RE.findall(text)
    if stopwords:
        words = [w for w in words if w not in EN_STOPWORDS]
    return _stem_words(words)


@lru_cache(maxsize=65536)
def _cut_cjk_cached(run: str) -> tuple[str, ...]:
    return tuple(w for w in jieba_ready().cut_for_search(run) if w.strip())


def _cut_cjk(run: str) -> tuple[str, ...]:
    if len(run) > 64:  # long runs are rarely repeated: do not fill the cache with them
        return tuple(w for w in jieba_ready().cut_for_search(run) if w.strip())
    return _cut_cjk_cached(run)


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans `(start, end)` of `text[start:end]`, trimmed of surrounding whitespace.
    Every non-blank character of the range is in exactly one span."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENT_END_RE.finditer(text, start, end):
        _append_trimmed(text, cursor, match.end(), spans)
        cursor = match.end()
    _append_trimmed(text, cursor, end, spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))
