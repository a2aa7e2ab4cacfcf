"""Evaluation datasets in BEIR layout: `corpus.jsonl`, `queries.jsonl`, `qrels.tsv` and an
optional `answers.jsonl` (gold answer spans with character offsets into the corpus text).

Two datasets ship with the project (`covidqa`, `cmrc2018`, under `eval/data/`); any other
folder in the same layout can be loaded by path.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from rag.errors import ConfigError, NotFound

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
REQUIRED_FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv")
ANSWERS_FILE = "answers.jsonl"


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class GoldAnswer:
    """A gold answer; `start` is its character offset in `corpus[doc_id].text`, or None when
    the answer text cannot be located there (then matching falls back to text containment)."""

    text: str
    start: int | None
    doc_id: str

    @property
    def end(self) -> int | None:
        return None if self.start is None else self.start + len(self.text)


@dataclass
class Dataset:
    name: str
    path: Path
    corpus: dict[str, CorpusDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # qid -> {doc_id: relevance > 0}
    answers: dict[str, list[GoldAnswer]] = field(default_factory=dict)

    def sample(self, limit: int | None, seed: int = 0) -> list[str]:
        """Query ids that have relevance judgements: all of them (sorted) when `limit` is None
        or not smaller than their number, else `limit` ids drawn reproducibly with `seed`."""
        if limit is not None and limit < 0:
            raise ConfigError(f"sample limit must be >= 0, got {limit}", field="limit")
        ids = sorted(qid for qid in self.queries if self.qrels.get(qid))
        if limit is None or limit >= len(ids):
            return ids
        return random.Random(seed).sample(ids, limit)


def shipped_datasets() -> list[str]:
    """Names of the datasets bundled in `eval/data/`."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.name for p in DATA_DIR.iterdir() if (p / "corpus.jsonl").is_file())


def resolve_dataset_path(name_or_path: str) -> Path:
    if name_or_path in shipped_datasets():
        return DATA_DIR / name_or_path
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        known = ", ".join(shipped_datasets()) or "none"
        raise NotFound(
            f"dataset {name_or_path!r} is neither a shipped dataset ({known}) nor a folder",
            field="dataset",
        )
    return path


def load_dataset(name_or_path: str, *, align_offsets: bool = True) -> Dataset:
    """Load a shipped dataset by name ("covidqa", "cmrc2018") or a BEIR-layout folder by path.

    With `align_offsets` (the default) gold answers are stripped of surrounding whitespace and
    their offsets re-located in the document text when the given one does not point at the
    answer (see `align_answer`); with it off they are kept as written (a negative offset
    still becomes None).
    """
    path = resolve_dataset_path(name_or_path)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise NotFound(f"dataset folder {path} has no {name}", field="dataset")
    corpus = _load_corpus(path / "corpus.jsonl")
    queries = _load_queries(path / "queries.jsonl")
    qrels = _load_qrels(path / "qrels.tsv", queries, corpus)
    answers: dict[str, list[GoldAnswer]] = {}
    if (path / ANSWERS_FILE).is_file():
        answers = _load_answers(path / ANSWERS_FILE, corpus, qrels, align_offsets)
    dataset = Dataset(path.name, path, corpus, queries, qrels, answers)
    log.info(
        "loaded dataset %s: %d documents, %d queries, %d with qrels, %d with answers",
        dataset.name, len(corpus), len(queries), len(qrels), len(answers),
    )
    return dataset


def align_answer(text: str, answer: str, start: int | None) -> tuple[str, int | None]:
    """Return the answer stripped of surrounding whitespace and an offset where it really
    occurs in `text`: the given one when it matches (allowing for the stripped whitespace),
    else the occurrence nearest to it (the first one when no offset is given), else None."""
    stripped = answer.strip()
    if not stripped:
        return stripped, None
    if start is not None and start >= 0:
        lead = len(answer) - len(answer.lstrip())
        for candidate in (start + lead, start):
            if text.startswith(stripped, candidate):
                return stripped, candidate
    occurrences = list(_find_all(text, stripped))
    if not occurrences:
        return stripped, None
    if start is None or start < 0:
        return stripped, occurrences[0]
    return stripped, min(occurrences, key=lambda i: (abs(i - start), i))


def offset_check(dataset: Dataset) -> dict[str, int]:
    """Count gold answers whose offset points at the answer text (`exact`), points elsewhere
    (`mismatch`) or is missing (`no_offset`)."""
    counts = {"total": 0, "exact": 0, "mismatch": 0, "no_offset": 0}
    for golds in dataset.answers.values():
        for gold in golds:
            counts["total"] += 1
            if gold.start is None:
                counts["no_offset"] += 1
            elif dataset.corpus[gold.doc_id].text[gold.start : gold.end] == gold.text:
                counts["exact"] += 1
            else:
                counts["mismatch"] += 1
    return counts


def corpus_file_name(doc_id: str) -> str:
    """File name for a corpus document: the id percent-encoded (so any id is a safe name and
    the mapping is reversible) plus `.txt`."""
    name = quote(doc_id, safe="")
    if name.startswith("."):  # hidden files may be skipped by a folder walk
        name = "%2E" + name[1:]
    return name + ".txt"


def doc_id_from_source(source: str) -> str:
    """The corpus document id of an ingested file written by `write_corpus_as_files` (the
    inverse of `corpus_file_name`; `source` may be a relative or absolute path)."""
    name = PurePosixPath(source.replace("\\", "/")).name
    if name.endswith(".txt"):
        name = name[: -len(".txt")]
    return unquote(name)


def write_corpus_as_files(
    dataset: Dataset, folder: Path, doc_ids: Iterable[str] | None = None
) -> list[Path]:
    """Write each corpus document (or only `doc_ids`) as `<doc_id>.txt` holding exactly its
    text (no title line), UTF-8 without newline translation, so character offsets of gold
    answers stay valid after ingestion. Files already holding the same bytes are left
    untouched (their modification time too). Documents with blank text are skipped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = list(dataset.corpus) if doc_ids is None else list(dict.fromkeys(doc_ids))
    paths: list[Path] = []
    for doc_id in wanted:
        doc = dataset.corpus.get(doc_id)
        if doc is None:
            raise NotFound(f"document {doc_id!r} is not in dataset {dataset.name}", field="doc_ids")
        if not doc.text.strip():
            log.warning("skipping document %s of %s: blank text", doc_id, dataset.name)
            continue
        path = folder / corpus_file_name(doc_id)
        data = doc.text.encode("utf-8")
        if not (path.is_file() and path.read_bytes() == data):
            path.write_bytes(data)
        paths.append(path)
    return paths


# -- readers ---------------------------------------------------------------------------------


def _find_all(text: str, needle: str) -> Iterator[int]:
    i = text.find(needle)
    while i >= 0:
        yield i
        i = text.find(needle, i + 1)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, row


def _field(row: dict[str, Any], key: str, path: Path, lineno: int, kind: type = str) -> Any:
    value = row.get(key)
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{path}:{lineno}: field {key!r} missing or not a {kind.__name__}")
    return value


def _load_corpus(path: Path) -> dict[str, CorpusDoc]:
    corpus: dict[str, CorpusDoc] = {}
    for lineno, row in _jsonl(path):
        doc_id = _field(row, "_id", path, lineno)
        if doc_id in corpus:
            raise ConfigError(f"{path}:{lineno}: duplicate document id {doc_id!r}")
        title = row.get("title") or ""
        corpus[doc_id] = CorpusDoc(doc_id, str(title), _field(row, "text", path, lineno))
    return corpus


def _load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, row in _jsonl(path):
        qid = _field(row, "_id", path, lineno)
        if qid in queries:
            raise ConfigError(f"{path}:{lineno}: duplicate query id {qid!r}")
        queries[qid] = _field(row, "text", path, lineno)
    return queries


def _load_qrels(path: Path, queries: dict[str, str], corpus: dict[str, CorpusDoc]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    dropped = 0
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) != 3:
                raise ConfigError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(parts)}")
            qid, doc_id, score_text = (p.strip() for p in parts)
            try:
                score = int(float(score_text))
            except ValueError as exc:
                raise ConfigError(f"{path}:{lineno}: score {score_text!r} is not a number") from exc
            if score <= 0:
                continue
            if qid not in queries or doc_id not in corpus:
                dropped += 1
                continue
            qrels.setdefault(qid, {})[doc_id] = score
    if dropped:
        log.warning("%s: dropped %d judgements naming an unknown query or document", path, dropped)
    return qrels


def _load_answers(
    path: Path,
    corpus: dict[str, CorpusDoc],
    qrels: dict[str, dict[str, int]],
    align: bool,
) -> dict[str, list[GoldAnswer]]:
    answers: dict[str, list[GoldAnswer]] = {}
    for lineno, row in _jsonl(path):
        qid = _field(row, "_id", path, lineno)
        doc_id = row.get("doc_id")
        if doc_id is None and len(qrels.get(qid, {})) == 1:
            doc_id = next(iter(qrels[qid]))
        if doc_id is None:
            raise ConfigError(f"{path}:{lineno}: no doc_id and the query has not exactly one relevant document")
        doc_id = str(doc_id)
        if doc_id not in corpus:
            raise ConfigError(f"{path}:{lineno}: unknown document {doc_id!r}")
        texts = row.get("answers")
        starts = row.get("answer_starts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"{path}:{lineno}: 'answers' must be a list of strings")
        if starts is None:
            starts = [None] * len(texts)
        if not isinstance(starts, list) or len(starts) != len(texts):
            raise ConfigError(f"{path}:{lineno}: 'answer_starts' must be a list as long as 'answers'")
        if not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in starts):
            raise ConfigError(f"{path}:{lineno}: 'answer_starts' must hold integers or null")
        doc_text = corpus[doc_id].text
        golds: list[GoldAnswer] = []
        for text, start in zip(texts, starts):
            if align:
                text, start = align_answer(doc_text, text, start)
            elif start is not None and start < 0:
                start = None
            gold = GoldAnswer(text, start, doc_id)
            if text.strip() and gold not in golds:  # annotators often repeat the same span
                golds.append(gold)
        answers.setdefault(qid, []).extend(golds)
    return answers
