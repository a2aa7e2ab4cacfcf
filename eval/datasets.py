"""Evaluation datasets in BEIR layout: `corpus.jsonl` (`_id`, optional `title`, `text`),
`queries.jsonl`, graded relevance judgements in `qrels.tsv` or BEIR's `qrels/<split>.tsv`, and
an optional `answers.jsonl` (gold answers, optionally with their document and offsets).

Two datasets ship with the project (`covidqa`, `cmrc2018`, under `eval/data/`); any other
folder in the same layout can be loaded by path. Rows and queries that cannot be used are
skipped and recorded (`Dataset.issues`, `Dataset.skipped_queries`), never fatal.

The corpus is streamed: `load_dataset(..., on_passage=...)` hands every passage to a callback
(which writes it as a file for ingestion) and, with `keep_text="judged"`, keeps in memory only
the texts that scoring needs (passages judged relevant or named by an answer).
"""

from __future__ import annotations

import hashlib
import logging
import random
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from eval.dataset_readers import AnswerRow, Issues, as_id, read_answers, read_jsonl, read_qrels, read_queries
from rag.errors import ConfigError, NotFound

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
REQUIRED_FILES = ("corpus.jsonl", "queries.jsonl")
QRELS_FILE = "qrels.tsv"
QRELS_DIR = "qrels"
DEFAULT_QRELS_SPLIT = "test"
ANSWERS_FILE = "answers.jsonl"
SPLITS = ("all", "dev", "test")
KEEP_TEXT = ("all", "judged")


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class GoldAnswer:
    """A gold answer located in one document; `start` is its character offset in
    `corpus[doc_id].text`, or None when only its normalised text occurs there (then matching
    falls back to text containment)."""

    text: str
    start: int | None
    doc_id: str

    @property
    def end(self) -> int | None:
        return None if self.start is None else self.start + len(self.text)


@dataclass(frozen=True)
class AnswerKey:
    """What a generated answer must state: every part of `all_of` (in one of its alternative
    forms) when given, else any one of the alternative `answers`."""

    answers: tuple[str, ...] = ()
    all_of: tuple[tuple[str, ...], ...] = ()


@dataclass
class Dataset:
    name: str
    path: Path
    corpus: dict[str, CorpusDoc]  # the passages whose text is kept (all, or those scoring needs)
    queries: dict[str, str]  # every query with a non-empty text
    qrels: dict[str, dict[str, int | float]]  # evaluable qid -> {doc_id: grade > 0}
    answers: dict[str, list[GoldAnswer]] = field(default_factory=dict)  # located gold spans
    answer_keys: dict[str, AnswerKey] = field(default_factory=dict)  # gold answers per query
    judged_negatives: dict[str, dict[str, int | float]] = field(default_factory=dict)  # grade <= 0
    doc_ids: set[str] = field(default_factory=set)  # every passage id of corpus.jsonl
    skipped_queries: dict[str, str] = field(default_factory=dict)  # qid -> why it is not evaluated
    doc_level_only: list[str] = field(default_factory=list)  # answers not found in any relevant passage
    issues: Issues = field(default_factory=Issues)
    qrels_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.doc_ids:
            self.doc_ids = set(self.corpus)

    def evaluable(self) -> list[str]:
        """Sorted ids of the queries that have a text and at least one relevant passage."""
        return sorted(qid for qid in self.queries if self.qrels.get(qid))

    def sample(self, limit: int | None, seed: int = 0, split: str = "all", skip: int = 0) -> list[str]:
        """Evaluable query ids of `split` (see `split_ids`): all of them (sorted) when `limit`
        is None or not smaller than their number, else `limit` ids drawn reproducibly with
        `seed`. `skip` leaves out the ids that `sample(skip, seed, split)` draws, so
        `skip=N` gives a fresh sample of the same half, disjoint from the first N: settings
        chosen on one dev sample can be checked on another without touching the test half."""
        if limit is not None and limit < 0:
            raise ConfigError(f"sample limit must be >= 0, got {limit}", field="limit")
        if skip < 0:
            raise ConfigError(f"sample skip must be >= 0, got {skip}", field="skip")
        ids = split_ids(self.evaluable(), split, seed)
        if skip:
            drawn = set(_draw(ids, skip, seed))
            ids = [qid for qid in ids if qid not in drawn]
        return _draw(ids, limit, seed)


def sample_record(spec, qids: list[str]) -> dict[str, object]:
    """What settings.json records of a sample: `spec` is any eval spec with `limit`, `skip`,
    `seed` and `split` (eval.runner.EvalSpec, eval.robustness_report.RobustnessSpec)."""
    return {"limit": spec.limit, "skip": spec.skip, "seed": spec.seed, "split": spec.split, "n": len(qids),
            "qids": qids}


def _draw(ids: list[str], limit: int | None, seed: int) -> list[str]:
    """`ids` as they are when `limit` is None or not smaller than their number, else `limit`
    of them drawn reproducibly with `seed`."""
    if limit is None or limit >= len(ids):
        return ids
    return random.Random(seed).sample(ids, limit)


def split_ids(qids: Iterable[str], split: str, seed: int = 0) -> list[str]:
    """The dev or test half of `qids` (or all of them), sorted. The ids are ordered by
    SHA-256 of `"<seed>:<id>"`; the first half (rounded down) is dev, the rest test. The split
    depends only on the seed and the ids themselves: the same on every machine and Python
    version, and the two halves are disjoint and cover every id."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}", field="split")
    ids = sorted(set(qids))
    if split == "all":
        return ids
    ordered = sorted(ids, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    half = len(ordered) // 2
    return sorted(ordered[:half] if split == "dev" else ordered[half:])


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


def qrels_path(folder: Path, split: str | None = None) -> Path:
    """The judgements file: `qrels/<split>.tsv` when a split is named, else `qrels.tsv`, else
    BEIR's `qrels/test.tsv`."""
    if split is not None:
        path = folder / QRELS_DIR / f"{split}.tsv"
        if path.is_file():
            return path
        available = sorted(p.stem for p in (folder / QRELS_DIR).glob("*.tsv")) if (folder / QRELS_DIR).is_dir() else []
        raise NotFound(f"dataset folder {folder} has no {QRELS_DIR}/{split}.tsv (qrels splits there: "
                       f"{', '.join(available) or 'none'})", field="qrels_split")
    for path in (folder / QRELS_FILE, folder / QRELS_DIR / f"{DEFAULT_QRELS_SPLIT}.tsv"):
        if path.is_file():
            return path
    raise NotFound(f"dataset folder {folder} has no {QRELS_FILE} nor {QRELS_DIR}/{DEFAULT_QRELS_SPLIT}.tsv",
                   field="dataset")


def load_dataset(
    name_or_path: str,
    *,
    align_offsets: bool = True,
    qrels_split: str | None = None,
    keep_text: str = "all",
    on_passage: Callable[[CorpusDoc], None] | None = None,
) -> Dataset:
    """Load a shipped dataset by name ("covidqa", "cmrc2018") or a BEIR-layout folder by path.

    Queries, judgements and answers are read first, then the corpus is streamed once: each
    passage goes to `on_passage` (when given) and its text is kept in `Dataset.corpus` for
    `keep_text="all"`, or only when a query judges it relevant or an answer names it for
    `keep_text="judged"` (what the metrics and the ChunkLocator need).

    With `align_offsets` (the default) gold answers are stripped of surrounding whitespace and
    their offsets re-located in the document text when the given one does not point at the
    answer (see `align_answer`); with it off they are kept as written (a negative offset
    still becomes None).
    """
    if keep_text not in KEEP_TEXT:
        raise ValueError(f"keep_text must be one of {KEEP_TEXT}, got {keep_text!r}")
    path = resolve_dataset_path(name_or_path)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise NotFound(f"dataset folder {path} has no {name}", field="dataset")
    qrels_file = qrels_path(path, qrels_split)
    issues = Issues()
    queries, skipped = read_queries(path / "queries.jsonl", issues)
    judgements = read_qrels(qrels_file, issues)
    answer_rows = read_answers(path / ANSWERS_FILE, issues) if (path / ANSWERS_FILE).is_file() else []
    wanted = {d for qid, judged in judgements.items() if qid in queries for d, g in judged.items() if g > 0}
    wanted.update(row.doc_id for row in answer_rows if row.doc_id is not None)
    corpus: dict[str, CorpusDoc] = {}
    doc_ids: set[str] = set()
    for doc in _stream_corpus(path / "corpus.jsonl", issues, doc_ids):
        if on_passage is not None:
            on_passage(doc)
        if keep_text == "all" or doc.id in wanted:
            corpus[doc.id] = doc
    dataset = Dataset(path.name, path, corpus, queries, {}, doc_ids=doc_ids, skipped_queries=skipped,
                      issues=issues, qrels_file=qrels_file)
    _judge(dataset, judgements)
    _attach_answers(dataset, answer_rows, align_offsets, path / ANSWERS_FILE)
    log.info(
        "loaded dataset %s: %d passages, %d queries, %d evaluable, %d with answers, %d skipped, %d rows skipped",
        dataset.name, len(doc_ids), len(queries.keys() | skipped.keys()), len(dataset.qrels), len(dataset.answer_keys),
        len(dataset.skipped_queries), issues.total,
    )
    return dataset


def _stream_corpus(path: Path, issues: Issues, doc_ids: set[str]) -> Iterator[CorpusDoc]:
    """Each usable passage once (a repeated id keeps the first), adding its id to `doc_ids`."""
    for lineno, row in read_jsonl(path, issues):
        doc_id = as_id(row.get("_id"))
        text = row.get("text")
        if doc_id is None:
            issues.skip(path, lineno, "missing or invalid _id")
        elif not isinstance(text, str):
            issues.skip(path, lineno, "missing text", f"passage {doc_id!r}")
        elif doc_id in doc_ids:
            issues.skip(path, lineno, "duplicate passage id, the first is kept", repr(doc_id))
        else:
            doc_ids.add(doc_id)
            title = row.get("title")
            yield CorpusDoc(doc_id, title if isinstance(title, str) else "" if title is None else str(title), text)


def _judge(dataset: Dataset, judgements: dict[str, dict[str, int | float]]) -> None:
    """Split the judgements into relevant (grade > 0) and judged not relevant (grade <= 0)
    passages of known queries; record the queries that cannot be evaluated."""
    unknown_query = unknown_passage = 0
    for qid, judged in judgements.items():
        if qid not in dataset.queries:
            unknown_query += qid not in dataset.skipped_queries
            continue
        known = {d: g for d, g in judged.items() if d in dataset.doc_ids}
        unknown_passage += len(judged) - len(known)
        relevant = {d: g for d, g in known.items() if g > 0}
        negatives = {d: g for d, g in known.items() if g <= 0}
        if negatives:
            dataset.judged_negatives[qid] = negatives
        if relevant:
            dataset.qrels[qid] = relevant
        elif any(g > 0 for g in judged.values()):
            dataset.skipped_queries[qid] = "its relevant passages are missing from the corpus"
        else:
            dataset.skipped_queries[qid] = "no passage judged relevant"
    for qid in dataset.queries:
        if qid not in judgements:
            dataset.skipped_queries[qid] = "no relevance judgements"
    name = dataset.qrels_file.name if dataset.qrels_file else QRELS_FILE
    if unknown_query:
        dataset.issues.counts[f"{name}: judgements of a query not in queries.jsonl"] += unknown_query
    if unknown_passage:
        dataset.issues.counts[f"{name}: judgements of a passage not in corpus.jsonl"] += unknown_passage
    if unknown_query or unknown_passage:
        log.warning("%s: ignored judgements of %d unknown queries and %d unknown passages", name, unknown_query,
                    unknown_passage)


def _attach_answers(dataset: Dataset, rows: Sequence[AnswerRow], align: bool, path: Path) -> None:
    """Gold answer keys per evaluable query, and their spans located in the query's relevant
    passages (or the passage a row names). A query none of whose answers occurs in any such
    passage is scored at document level only (`doc_level_only`)."""
    squashed: dict[str, str] = {}
    for row in rows:
        if row.qid not in dataset.qrels:
            reason = dataset.skipped_queries.get(row.qid, "not in queries.jsonl")
            dataset.issues.skip(path, row.lineno, "answers of a query that is not evaluated", reason)
            continue
        if row.doc_id is not None and row.doc_id not in dataset.doc_ids:
            dataset.issues.skip(path, row.lineno, "unknown document", repr(row.doc_id))
            continue
        key = dataset.answer_keys.get(row.qid, AnswerKey())
        dataset.answer_keys[row.qid] = AnswerKey(tuple(dict.fromkeys(key.answers + row.answers)),
                                                 key.all_of + row.all_of)
        relevant = dataset.qrels[row.qid]
        docs = [row.doc_id] if row.doc_id is not None else list(relevant)
        golds = dataset.answers.setdefault(row.qid, [])
        for text, start in zip(row.answers, row.starts):
            for doc_id in docs:
                gold = _locate(dataset.corpus[doc_id].text, text, start if len(docs) == 1 else None, doc_id,
                               align, squashed)
                if gold is not None and gold not in golds:  # annotators often repeat the same span
                    golds.append(gold)
    for qid in list(dataset.answers):
        if not dataset.answers[qid]:
            del dataset.answers[qid]
    dataset.doc_level_only = sorted(q for q in dataset.answer_keys if q not in dataset.answers)


def _locate(doc_text: str, text: str, start: int | None, doc_id: str, align: bool,
            squashed: dict[str, str]) -> GoldAnswer | None:
    if not align:
        return GoldAnswer(text, start, doc_id)
    text, start = align_answer(doc_text, text, start)
    if not text:
        return None
    if start is not None:
        return GoldAnswer(text, start, doc_id)
    if doc_id not in squashed:
        squashed[doc_id] = squash(doc_text)
    return GoldAnswer(text, None, doc_id) if squash(text) in squashed[doc_id] else None


def squash(text: str) -> str:
    """NFKC, lowercase, whitespace collapsed: the form chunk text and answers are compared in
    when offsets are unknown."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


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
    """File name for a corpus document: the id with its ASCII punctuation percent-encoded (so any
    id is a safe name and the mapping is reversible) plus `.txt`. Other characters stay as they are:
    "考勤管理办法2023版" stays readable, and its year stays a version marker (rag/versions.py)."""
    name = "".join(ch if ord(ch) > 127 and ch.isprintable() else quote(ch, safe="") for ch in doc_id)
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
    """Write each kept corpus document (or only `doc_ids`) as `<doc_id>.txt` holding exactly
    its text (see `CorpusFolder.write`). Documents with blank text are skipped."""
    writer = CorpusFolder(folder)
    wanted = list(dataset.corpus) if doc_ids is None else list(dict.fromkeys(doc_ids))
    for doc_id in wanted:
        doc = dataset.corpus.get(doc_id)
        if doc is None:
            raise NotFound(f"document {doc_id!r} is not in dataset {dataset.name}", field="doc_ids")
        writer.write(doc)
    return writer.paths


class CorpusFolder:
    """Writes streamed passages into a folder, one `<doc_id>.txt` each (see `write`), for
    ingestion; `prune()` then deletes the `.txt` files of passages no longer in the corpus, so
    the folder (and the knowledge base synced from it) mirrors the dataset. Only file paths are
    kept, never the texts. A passage's title is not written into its file (see `write`): `titles`
    maps each file name to it, for the ingest to give the document (`Ingestor(titles=...)`)."""

    def __init__(self, folder: Path, progress: Callable[[int], None] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.names: list[str] = []  # file names written (names, not Paths: a 100k corpus stays small)
        self.titles: dict[str, str] = {}  # file name -> the passage's title, for those that have one
        self.blank = 0

    @property
    def paths(self) -> list[Path]:
        return [self.folder / name for name in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def write(self, doc: CorpusDoc) -> Path | None:
        """Write exactly the passage text (no title line: its title goes to `titles`), UTF-8
        without newline translation, so character offsets of gold answers stay valid after
        ingestion. A file already holding the same bytes is left untouched (its modification time
        too); a passage with blank text is skipped (None)."""
        if self.progress is not None:
            self.progress(1)
        if not doc.text.strip():
            self.blank += 1
            log.debug("skipping passage %s: blank text", doc.id)
            return None
        name = corpus_file_name(doc.id)
        path = self.folder / name
        data = doc.text.encode("utf-8")
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            path.write_bytes(data)
        self.names.append(name)
        if doc.title.strip():
            self.titles[name] = doc.title.strip()
        return path

    __call__ = write

    def prune(self) -> int:
        """Delete `.txt` files this writer did not write; returns how many."""
        keep = set(self.names)
        stale = [p for p in self.folder.glob("*.txt") if p.name not in keep]
        for path in stale:
            path.unlink()
        return len(stale)


# -- helpers ---------------------------------------------------------------------------------


def _find_all(text: str, needle: str) -> Iterator[int]:
    i = text.find(needle)
    while i >= 0:
        yield i
        i = text.find(needle, i + 1)
