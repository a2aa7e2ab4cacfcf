"""Controlled contexts for `rag eval --robustness`: the passages a question is answered from
when the retrieval step is replaced by a chosen mix of evidence and noise.

- Every corpus passage is cut into *windows* of whole sentences that fit a token budget (a
  window is what a retrieved chunk would be); a sentence longer than the budget is cut.
- **Positives** of a question: one window per relevant passage (qrels grade > 0): the window
  centred on a gold answer span when the passage holds one (those first), else the window of
  the passage that BM25 ranks highest for the question.
- **Noise**: one window per passage, never from a relevant passage, never one that contains a
  gold answer (any alternative, any `all_of` form): first the passages judged not relevant
  (qrels grade <= 0, `Dataset.judged_negatives`), ranked by BM25, then *hard negatives*: the top
  BM25 windows of the rest of the corpus for the question. The order is fixed, so a context with
  n noise windows holds the first n, and a noisier context contains the less noisy one's noise.
- **Partial evidence** (information integration): for a question with several `all_of` parts,
  one window per part, each holding that part but not every part.
- **Counterfactual**: the `counterfactual` passage an answers.jsonl row gives (see
  `read_counterfactuals`).

BM25 is the project's own index (`LocalBM25Index`, in memory, the same tokenizer as retrieval:
jieba for Chinese).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from eval.dataset_readers import as_id, read_jsonl
from eval.datasets import ANSWERS_FILE, CorpusDoc, Dataset, corpus_file_name
from eval.metrics import containment_form, text_contains
from rag.adapters.bm25 import LocalBM25Index
from rag.generation import estimate_tokens
from rag.text import split_sentences
from rag.types import Chunk, Filter, Hit

log = logging.getLogger(__name__)

SEARCH_DEPTH = 200  # BM25 windows examined per question for noise
KINDS = ("positive", "partial", "noise", "counterfactual")


@dataclass(frozen=True)
class Passage:
    """One window given to the model; `origin` says where noise came from (judged | bm25)."""

    doc_id: str
    title: str
    text: str
    start: int
    end: int
    kind: str = "noise"
    origin: str = ""

    @property
    def id(self) -> str:
        return f"{self.doc_id}@{self.start}"

    def hit(self) -> Hit:
        chunk = Chunk(id=f"{self.kind}:{self.id}", kb="", doc_id=self.doc_id, source=corpus_file_name(self.doc_id),
                      text=self.text, start=self.start, end=self.end, title=self.title)
        return Hit(chunk, score=1.0)

    def as_kind(self, kind: str, origin: str = "") -> Passage:
        return Passage(self.doc_id, self.title, self.text, self.start, self.end, kind, origin)

    def record(self) -> dict[str, object]:
        return {"id": self.id, "doc_id": self.doc_id, "kind": self.kind, "origin": self.origin,
                "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Counterfactual:
    doc_id: str  # the corpus passage it names, or "doc-<hash>" for an inline passage
    text: str
    answers: tuple[str, ...]  # the false answers the passage states


def read_counterfactuals(dataset: Dataset) -> dict[str, Counterfactual]:
    """The `counterfactual` field of answers.jsonl rows: `{"passage": "text", "answers": [...]}`
    or `{"doc_id": "corpus id", "answers": [...]}` (`answers`: the false answer(s) it states, a
    string or a list). Rows with a malformed field are recorded in `dataset.issues`; the first
    counterfactual of a query is kept."""
    path = dataset.path / ANSWERS_FILE
    out: dict[str, Counterfactual] = {}
    if not path.is_file():
        return out
    for lineno, row in read_jsonl(path, dataset.issues):
        field = row.get("counterfactual")
        qid = as_id(row.get("_id"))
        if field is None or qid is None or qid not in dataset.answer_keys or qid in out:
            continue
        answers = field.get("answers") if isinstance(field, dict) else None
        answers = [answers] if isinstance(answers, str) else answers
        doc_id = as_id(field.get("doc_id")) if isinstance(field, dict) else None
        text = field.get("passage") if isinstance(field, dict) else None
        if doc_id is not None and doc_id in dataset.corpus:
            text = dataset.corpus[doc_id].text
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)):
            dataset.issues.skip(path, lineno, "'counterfactual.answers' must be a non-empty string or list of strings")
        elif not isinstance(text, str) or not text.strip():
            dataset.issues.skip(path, lineno, "'counterfactual' needs a 'passage' text or the 'doc_id' of a passage")
        else:
            # an inline passage gets a neutral id: its file name is the heading the model sees
            inline = "doc-" + hashlib.sha256(f"{qid}:{text}".encode()).hexdigest()[:10]
            out[qid] = Counterfactual(doc_id or inline, text.strip(), tuple(a.strip() for a in answers))
    return out


def contains_any(text: str, answers: Sequence[str], whole_words: bool = True) -> bool:
    """Whether the text states one of the answers (`text_contains`, on word boundaries), or with
    `whole_words=False` holds one anywhere (noise is excluded on this stricter test: a gold span
    annotated mid-word, "he case was ...", still keeps "The case was ..." out of the noise)."""
    form = containment_form(text)
    if whole_words:
        return any(text_contains(form, a) for a in answers)
    return any(containment_form(a) and containment_form(a) in form for a in answers)


def shuffled(passages: Sequence[Passage], *parts: object) -> list[Passage]:
    """The passages in an order fixed by `parts` (seed, query id, test, setting): SHA-256 seeded,
    the same on every machine."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    out = list(passages)
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(out)
    return out


# -- windows ---------------------------------------------------------------------------------


def _cut(text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
    """[start, end) in pieces of at most `max_tokens` estimated tokens."""
    pieces = []
    while start < end:
        stop = end
        while stop > start + 1 and estimate_tokens(text[start:stop]) > max_tokens:
            stop = start + max(1, (stop - start) * max_tokens // max(estimate_tokens(text[start:stop]), 1))
        pieces.append((start, stop))
        start = stop
    return pieces


def windows(text: str, max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive runs of whole sentences of at most `max_tokens` estimated tokens each."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for s, e in split_sentences(text):
        if current is not None and estimate_tokens(text[current[0]:e]) <= max_tokens:
            current = (current[0], e)
            continue
        if current is not None:
            out.append(current)
        current = None
        if estimate_tokens(text[s:e]) > max_tokens:
            out.extend(_cut(text, s, e, max_tokens))
        else:
            current = (s, e)
    if current is not None:
        out.append(current)
    return out


def window_around(text: str, start: int, end: int, max_tokens: int, keep=None) -> tuple[int, int]:
    """Whole sentences around [start, end) that fit `max_tokens`, grown one sentence at a time
    alternately after and before while `keep(span)` (when given) still holds; the span alone
    when even its sentences do not fit."""
    spans = split_sentences(text) or [(0, len(text))]
    first = next((i for i, (s, e) in enumerate(spans) if e > start), len(spans) - 1)
    last = next((i for i, (s, e) in enumerate(spans) if e >= end), len(spans) - 1)
    lo, hi = spans[first][0], spans[max(last, first)][1]
    if estimate_tokens(text[lo:hi]) > max_tokens or (keep is not None and not keep(lo, hi)):
        return start, end
    i, j, grow_after = first, max(last, first), True
    while i > 0 or j < len(spans) - 1:
        candidates = [(i, j + 1), (i - 1, j)] if grow_after else [(i - 1, j), (i, j + 1)]
        for a, b in candidates:
            if 0 <= a and b < len(spans):
                span = (spans[a][0], spans[b][1])
                if estimate_tokens(text[span[0]:span[1]]) <= max_tokens and (keep is None or keep(*span)):
                    i, j = a, b
                    break
        else:
            break
        grow_after = not grow_after
    return spans[i][0], spans[j][1]


# -- the builder -----------------------------------------------------------------------------


class ContextBuilder:
    """Positive, noise, partial and counterfactual windows for the questions of a dataset whose
    whole corpus is in memory (`load_dataset(keep_text="all")`)."""

    def __init__(self, dataset: Dataset, max_tokens: int, counterfactuals: dict[str, Counterfactual] | None = None,
                 header_tokens=None) -> None:
        if max_tokens < 8:
            raise ValueError(f"max_tokens per passage must be >= 8, got {max_tokens}")
        self.dataset = dataset
        self.counterfactuals = counterfactuals or {}
        self._header = header_tokens or (lambda doc: estimate_tokens(f"[10] {doc.title or corpus_file_name(doc.id)}"))
        self._max = max_tokens
        self._windows: dict[str, Passage] = {}
        self._by_doc: dict[str, list[Passage]] = {}
        self.index = LocalBM25Index(None)
        chunks = []
        for doc in dataset.corpus.values():
            limit = self.limit(doc)
            for s, e in windows(doc.text, limit):
                passage = Passage(doc.id, doc.title, doc.text[s:e], s, e)
                self._windows[passage.id] = passage
                self._by_doc.setdefault(doc.id, []).append(passage)
                chunks.append(Chunk(id=passage.id, kb="", doc_id=doc.id, source=doc.id, text=passage.text,
                                    start=s, end=e, title=doc.title))
        with self.index.transaction():
            self.index.add(chunks)
        log.info("robustness contexts: %d windows of at most %d tokens from %d passages", len(chunks), max_tokens,
                 len(dataset.corpus))

    def __len__(self) -> int:
        return len(self._windows)

    def limit(self, doc: CorpusDoc) -> int:
        """Tokens a window of `doc` may hold: the budget less its numbered heading."""
        return max(8, self._max - self._header(doc))

    def close(self) -> None:
        self.index.close()

    def _gold_texts(self, qid: str) -> list[str]:
        key = self.dataset.answer_keys.get(qid)
        if key is None:
            return []
        return [*key.answers, *(alt for part in key.all_of for alt in part)]

    def _ranked(self, qid: str, flt: Filter | None = None) -> list[Passage]:
        hits = self.index.search(self.dataset.queries[qid], SEARCH_DEPTH, flt)
        return [self._windows[h.chunk_id] for h in hits]

    def positives(self, qid: str) -> list[Passage]:
        """One window per relevant passage: around a gold answer span first, then the best BM25
        window of each other relevant passage (its first window when BM25 finds none)."""
        relevant = self.dataset.qrels.get(qid, {})
        out: dict[str, Passage] = {}
        for gold in self.dataset.answers.get(qid, []):
            doc = self.dataset.corpus.get(gold.doc_id)
            if doc is None or gold.doc_id in out:
                continue
            start = gold.start if gold.start is not None else doc.text.find(gold.text)
            if start is None or start < 0:
                continue
            s, e = window_around(doc.text, start, start + len(gold.text), self.limit(doc))
            out[doc.id] = Passage(doc.id, doc.title, doc.text[s:e], s, e, "positive")
        ranked = self._ranked(qid, Filter(doc_ids=tuple(sorted(relevant)))) if relevant else []
        for doc_id in sorted(relevant, key=lambda d: (-relevant[d], d)):
            if doc_id in out or doc_id not in self._by_doc:
                continue
            best = next((p for p in ranked if p.doc_id == doc_id), self._by_doc[doc_id][0])
            out[doc_id] = best.as_kind("positive")
        return list(out.values())

    def noise(self, qid: str, n: int) -> list[Passage]:
        """The first `n` noise windows of the question (see the module docstring); fewer when
        the corpus has no more."""
        if n <= 0:
            return []
        relevant = set(self.dataset.qrels.get(qid, {}))
        cf = self.counterfactuals.get(qid)
        excluded = relevant | ({cf.doc_id} if cf else set())
        golds = self._gold_texts(qid)
        judged = sorted(d for d in self.dataset.judged_negatives.get(qid, {})
                        if d in self._by_doc and d not in excluded)
        candidates: list[tuple[Passage, str]] = []
        if judged:
            ranked = self._ranked(qid, Filter(doc_ids=tuple(judged)))
            candidates += [(p, "judged") for p in ranked]
            candidates += [(p, "judged") for d in judged for p in self._by_doc[d]]  # judged but no shared word
        candidates += [(p, "bm25") for p in self._ranked(qid)]
        out: list[Passage] = []
        seen: set[str] = set()
        for passage, origin in candidates:
            if passage.doc_id in excluded or passage.doc_id in seen or contains_any(passage.text, golds, False):
                continue
            seen.add(passage.doc_id)
            out.append(passage.as_kind("noise", origin))
            if len(out) == n:
                break
        return out

    def partials(self, qid: str) -> tuple[list[Passage], str]:
        """Windows of the relevant passages each holding some `all_of` parts but not all, one
        per part (the first sentence stating it), and "" — or [] and why the question does not
        qualify."""
        key = self.dataset.answer_keys.get(qid)
        if key is None or len(key.all_of) < 2:
            return [], "fewer than 2 all_of parts"
        docs = [self.dataset.corpus[d] for d in sorted(self.dataset.qrels.get(qid, {})) if d in self.dataset.corpus]
        out: dict[str, Passage] = {}
        for part in key.all_of:
            found = None
            for doc in docs:
                def partial(s: int, e: int, text: str = doc.text) -> bool:
                    form = containment_form(text[s:e])
                    return not all(any(text_contains(form, a) for a in p) for p in key.all_of)

                for s, e in split_sentences(doc.text):
                    if contains_any(doc.text[s:e], part) and partial(s, e):
                        ws, we = window_around(doc.text, s, e, self.limit(doc), keep=partial)
                        found = Passage(doc.id, doc.title, doc.text[ws:we], ws, we, "partial")
                        break
                if found is not None:
                    break
            if found is None:
                return [], "a part is not stated alone in any sentence of a relevant passage"
            out.setdefault(found.id, found)
        if len(out) < 2:
            return [], "the parts are not spread over several passages"
        return list(out.values()), ""

    def counterfactual(self, qid: str) -> Passage | None:
        cf = self.counterfactuals.get(qid)
        if cf is None:
            return None
        text = cf.text
        doc = CorpusDoc(cf.doc_id, "", text)
        s, e = (0, len(text)) if estimate_tokens(text) <= self.limit(doc) else windows(text, self.limit(doc))[0]
        return Passage(cf.doc_id, "", text[s:e], s, e, "counterfactual")
