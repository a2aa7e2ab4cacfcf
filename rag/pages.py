"""Pages inside a chunk: a chunk that runs over a page break records where each page begins,
as `(page, offset)` pairs with offsets into the chunk's text (the first at 0), so a citation can
name the page its supporting sentence is on instead of the page the chunk starts on.

Chunks stored before the pairs existed carry only `page`; they read as `((page, 0),)`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rag.text import split_sentences, tokenize

PageStarts = tuple[tuple[int, int], ...]


def page_starts(spans: Iterable[tuple[int, int, int | None]], start: int, end: int) -> PageStarts:
    """The page boundaries of the chunk `[start, end)` of a document, from the document's
    `(block_start, block_end, page)` spans sorted by start: one pair per change of page, the
    offset relative to `start` (the first pair at 0). Spans without a page are ignored."""
    out: list[tuple[int, int]] = []
    for s, e, page in spans:
        if e <= start or page is None:
            continue
        if s >= end:
            break
        if not out or out[-1][0] != page:
            out.append((page, 0 if not out else max(s, start) - start))
    return tuple(out)


def page_at(pages: Sequence[Sequence[int]], offset: int) -> int | None:
    """The page that character `offset` of a chunk's text is on (None when it records no pages)."""
    found = None
    for page, at in pages:
        if at > offset and found is not None:
            break
        found = page
    return found


def supporting_offset(text: str, sentence: str) -> int | None:
    """Where in `text` the sentence sharing most words with `sentence` starts (ties: the first);
    None when no sentence of `text` shares a word with it."""
    words = set(tokenize(sentence))
    best, best_shared = None, 0
    for s, e in split_sentences(text):
        shared = len(words & set(tokenize(text[s:e])))
        if shared > best_shared:
            best, best_shared = s, shared
    return best


def cited_page(text: str, pages: Sequence[Sequence[int]], sentence: str, default: int | None) -> int | None:
    """The page of a chunk (`text` with page boundaries `pages`) that `sentence` was found on:
    the page its best-matching sentence starts on, `default` (the chunk's page) otherwise."""
    if len({page for page, _ in pages}) < 2:
        return default
    offset = supporting_offset(text, sentence)
    found = page_at(pages, offset) if offset is not None else None
    return found if found is not None else default
