"""Our recursive chunker against LangChain's `RecursiveCharacterTextSplitter` on the same texts.

    python benchmarks/chunkers.py [--size 800 --overlap 120] [--out runs/bench-chunkers.json]

Both get the same separators (blank line, line break, 。！？；, . ! ? ;, ，, comma, space) and
sizes; LangChain runs with `add_start_index=True` and `keep_separator="end"` (sentence ends stay
with their sentence). For each corpus (the shipped COVID-QA papers and CMRC 2018 passages, plus
a synthetic document of repeated passages, where `str.find`-based offsets can point at the wrong
copy) it reports: chunks, mean and max length, chunks over the size, chunks whose offsets are
exact (`text[start:end] == chunk`), chunks whose start lies before the previous chunk's start
(an offset found on an earlier copy of the same text), the share of the text's non-space
characters inside some chunk's span (an offset on the wrong copy leaves the true place
uncovered), chunks ending on a sentence or paragraph end, chunks starting
or ending inside a word, and the time. Needs `pip install -e ".[bench]"`."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import load_dataset  # noqa: E402
from ingest.chunkers.recursive import RecursiveChunker  # noqa: E402
from rag.types import ParsedDocument  # noqa: E402

SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", "! ", "? ", "; ", "，", ", ", " ", ""]
_SENTENCE_END = re.compile(r"[。！？；.!?;:：”\"')）]$")


def repeated_document() -> str:
    """Passages that occur several times (boilerplate, repeated headers): offsets by search go wrong."""
    para = ("The warranty covers manufacturing defects for two years. It does not cover water damage. "
            "Contact support with your serial number.")
    notice = "本手册的内容如有更改，恕不另行通知。请以最新版本为准。"
    blocks = []
    for i in range(40):
        blocks.append(para if i % 3 else f"Section {i}. {para}")
        blocks.append(notice)
    return "\n\n".join(blocks)


def repeated_lines() -> str:
    """A checklist whose lines repeat within the overlap distance."""
    return "\n".join(["- [ ] check the valve", "- [ ] check the valve", "- [x] done"] * 60)


def ours(text: str, size: int, overlap: int) -> list[tuple[int, int, str]]:
    spans = RecursiveChunker(size, overlap).split(ParsedDocument(text=text, title=""))
    return [(s.start, s.end, s.text) for s in spans]


def langchain(text: str, size: int, overlap: int) -> list[tuple[int, int, str]]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap, separators=SEPARATORS,
                                              keep_separator="end", add_start_index=True)
    out = []
    for doc in splitter.create_documents([text]):
        start = doc.metadata["start_index"]
        out.append((start, start + len(doc.page_content), doc.page_content))
    return out


def _mid_word(text: str, pos: int) -> bool:
    if pos <= 0 or pos >= len(text):
        return False
    a, b = text[pos - 1], text[pos]
    return a.isascii() and a.isalnum() and b.isascii() and b.isalnum()


def score(texts: list[str], split, size: int, overlap: int) -> dict:
    chunks = exact = sentence_end = mid_word = over = backwards = 0
    covered = content = 0
    lengths = []
    started = time.perf_counter()
    results = [split(t, size, overlap) for t in texts]
    seconds = time.perf_counter() - started
    for text, spans in zip(texts, results):
        mask = bytearray(len(text))
        prev_start = -1
        for start, end, chunk in spans:
            mask[max(start, 0):end] = b"\x01" * (end - max(start, 0))
            backwards += start < prev_start
            prev_start = start
            chunks += 1
            lengths.append(len(chunk))
            exact += start >= 0 and text[start:end] == chunk
            over += len(chunk) > size
            tail = chunk.rstrip()
            sentence_end += bool(_SENTENCE_END.search(tail)) or end >= len(text.rstrip()) or \
                text[end:end + 2].startswith("\n")
            mid_word += _mid_word(text, start) or _mid_word(text, end)
        for ch, flag in zip(text, mask):
            if not ch.isspace():
                content += 1
                covered += flag
    n = max(chunks, 1)
    return {"chunks": chunks, "mean_len": round(sum(lengths) / n, 1), "max_len": max(lengths, default=0),
            "over_size": over, "exact_offsets": round(exact / n, 4), "sentence_or_paragraph_end": round(sentence_end / n, 4),
            "mid_word_boundaries": mid_word, "starts_going_back": backwards,
            "text_covered": round(covered / max(content, 1), 4), "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--overlap", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-chunkers.json"))
    args = parser.parse_args()
    corpora = {name: [d.text for d in load_dataset(name).corpus.values() if d.text.strip()]
               for name in ("covidqa", "cmrc2018")}
    corpora["repeated passages"] = [repeated_document()]
    corpora["repeated short lines"] = [repeated_lines()]
    table = {}
    for name, texts in corpora.items():
        table[name] = {"ours": score(texts, ours, args.size, args.overlap),
                       "langchain": score(texts, langchain, args.size, args.overlap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": args.size, "overlap": args.overlap, "results": table}, indent=2))
    cols = ["chunks", "mean_len", "max_len", "over_size", "exact_offsets", "sentence_or_paragraph_end",
            "mid_word_boundaries", "starts_going_back", "text_covered", "seconds"]
    print("| corpus | splitter | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for name, row in table.items():
        for who, values in row.items():
            print(f"| {name} | {who} | " + " | ".join(str(values[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
