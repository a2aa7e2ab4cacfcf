"""Folder and file ingestion: parse -> chunk -> embed -> write, incremental and crash-safe.

For each document: skip it when its bytes, chunker settings and tags are unchanged (a document whose
OCR a page or time budget stopped records that budget, and is re-read only once it is raised:
`ocr_unchanged`); otherwise mark it pending in the catalog with the chunk ids about to be written,
embed, upsert into the vector store and the lexical index, mark it indexed (the catalog swaps its
live chunk ids: queries saw the old version until here, the new one from here), then delete the ids
it no longer has. The writes (stores, the swap, the deletes) run in a background thread
(`write_behind`, ingest/writer.py), one document after the other in order: a document is handed over
as soon as its chunks are embedded, and written while the rest of its batch and the next batch
embed. A document is marked pending before its batch embeds, so every document the writer has not
finished is pending; a write error stops the writer and fails the run, as inline (`write_behind` 0).
A run that was killed leaves pending rows; the next run re-ingests those documents (or removes them
when their file is gone) and deletes old chunks a swap left behind, so no document stays
half-indexed, and queries never see a half-written one (`rag.kb` filters hits to live ids)."""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from itertools import accumulate
from pathlib import Path

import numpy as np

from ingest.chunkers import Chunker
from ingest.formats.ocr import DEFAULT_OCR, OcrOptions, chunk_ocr
from ingest.limits import ParseLimits
from ingest.parse import (OCR_SUFFIXES, SUPPORTED_SUFFIXES, not_regular_reason, parse_bytes, read_file,
                          unsupported_reason)
from ingest.prefetch import prefetched
from ingest.writer import OrderedWriter
from rag.catalog import DocRecord
from rag.chunk_edits import KEEP, Reapplied, check_mode, reapply
from rag.errors import ParseError
from rag.ids import chunk_id_for, doc_id_for, sha256_hex
from rag.kb import EXTRA_SEP, KnowledgeBase
from rag.types import Chunk, ParsedDocument

log = logging.getLogger(__name__)

PREFETCH_FILES = 4  # files read, parsed and chunked ahead of the embedding (ingest/prefetch.py)
# groups of embedded documents waiting for the writer thread behind the one it writes (ingest/writer.py)
WRITE_BEHIND = 4
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
# in a document's recorded signature: the OCR budget that stopped it ("RAG_OCR_MAX_PAGES=500")
OCR_STOPPED = "|ocr-stopped:"


@dataclass
class FileResult:
    source: str
    status: str  # "indexed" | "updated" | "unchanged" | "skipped" | "removed"
    reason: str = ""
    chunks_added: int = 0
    chunks_removed: int = 0
    note: str = ""  # something the user should know about an indexed file ("3 invalid bytes replaced")
    edits_kept: int = 0  # chunk edits re-applied to the new version (rag/chunk_edits.py)
    edits_dropped: int = 0  # chunk edits deleted: the file changed and `edits=drop`, or their chunk is gone


@dataclass
class IngestReport:
    kb: str
    model: str
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    ocr_seconds: float = 0.0
    write_seconds: float = 0.0  # writing to the stores and the catalog (in the writer thread when it is on)

    def count(self, *statuses: str) -> int:
        return sum(1 for f in self.files if f.status in statuses)

    @property
    def chunks_added(self) -> int:
        return sum(f.chunks_added for f in self.files)

    @property
    def chunks_removed(self) -> int:
        return sum(f.chunks_removed for f in self.files)

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    def as_dict(self) -> dict:
        return {"kb": self.kb, "model": self.model, "seconds": round(self.seconds, 3),
                "embed_seconds": round(self.embed_seconds, 3), "ocr_seconds": round(self.ocr_seconds, 3),
                "indexed": self.count("indexed", "updated"), "unchanged": self.count("unchanged"),
                "removed": self.count("removed"), "skipped": len(self.skipped),
                "chunks_added": self.chunks_added, "chunks_removed": self.chunks_removed,
                "edits_kept": sum(f.edits_kept for f in self.files),
                "edits_dropped": sum(f.edits_dropped for f in self.files),
                "files": [f.__dict__ for f in self.files]}


@dataclass
class _Prepared:
    record: DocRecord
    chunks: list[Chunk]
    old_ids: set[str]
    status: str
    note: str = ""  # something the user should know ("3 invalid bytes replaced")
    partial: str = ""  # what of an indexed file was left out (the scanned pages that gave no text)
    edits: Reapplied | None = None  # the document's chunk edits re-applied (None: it had none)


@dataclass(frozen=True)
class IngestProgress:
    """What a progress callback receives: after each file is parsed, skipped or written, and after
    each embedding sub-batch, so a large file shows movement while it embeds."""

    source: str  # the file last worked on
    files_done: int  # files with a result (indexed, unchanged, skipped, removed)
    chunks_known: int  # chunks of the files parsed so far in this run
    chunks_embedded: int  # of those, chunks embedded so far
    chunks_written: int  # chunks written to the stores (the files that are done)
    done: FileResult | None = None  # the result of the file that has just finished, if one has


ProgressFn = Callable[[IngestProgress], None]


@dataclass
class FolderScan:
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason): links not followed, pipes, ...


def scan_folder(root: Path, follow_links: bool = False) -> FolderScan:
    """Files under `root`, sorted, hidden files and folders skipped. Symbolic links (to files or
    folders) that resolve outside `root` are skipped and reported unless `follow_links`; links
    inside are followed; a folder link back into the folders above it (a cycle) is never entered.
    Only regular files are listed: a named pipe, socket or device (or a link to one) is reported
    as skipped, never opened (reading a pipe would block forever)."""
    root = Path(root).resolve()
    scan = FolderScan()
    chains: dict[str, frozenset[Path]] = {str(root): frozenset({root})}  # walked folder -> real folders above
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        chain = chains.pop(dirpath, frozenset({here.resolve()}))
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            path = here / name
            real = _link_target(path, root, follow_links, scan, "folder")
            if real is None:
                continue
            if real in chain:
                scan.skipped.append((path, "symbolic link to a folder above it (a cycle): not followed"))
                continue
            chains[str(path)] = chain | {real}
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith(".") or name in IGNORED_NAMES:
                continue
            path = here / name
            real = _link_target(path, root, follow_links, scan, "file")
            if real is None:
                continue
            reason = _special_file_reason(real)
            if reason:
                log.warning("skipped %s: %s", path, reason)
                scan.skipped.append((path, reason))
            else:
                scan.files.append(path)
    return scan


def _special_file_reason(real: Path) -> str:
    try:
        return not_regular_reason(real.stat().st_mode)
    except OSError as exc:
        return f"unreadable: {exc.strerror or 'I/O error'}"


def _link_target(path: Path, root: Path, follow_links: bool, scan: FolderScan, kind: str) -> Path | None:
    """The real path of `path`, or None (and a reason in `scan.skipped`) when it is a link that must
    not be followed."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        scan.skipped.append((path, "broken or looping symbolic link"))
        return None
    if path.is_symlink() and not follow_links and not real.is_relative_to(root):
        log.warning("not following %s: it links to %s, outside %s", path, real, root)
        scan.skipped.append((path, f"symbolic link to a {kind} outside the folder "
                                   "(use --follow-links to index it)"))
        return None
    return real


class Ingestor:
    def __init__(self, kb: KnowledgeBase, chunker: Chunker, *, tags: dict[str, str] | None = None,
                 question_writer=None, batch_chunks: int = 128, progress: ProgressFn | None = None,
                 embed_batch: int = 32, limits: ParseLimits | None = None,
                 ocr: OcrOptions = DEFAULT_OCR, prefetch: int = PREFETCH_FILES,
                 write_behind: int = WRITE_BEHIND, titles: Mapping[str, str] | None = None,
                 file_tags: Mapping[str, Mapping[str, str]] | None = None, edits: str = KEEP) -> None:
        self.kb = kb
        # source -> the tags that file gets instead of `tags` (a re-parse keeps each document's own)
        self.file_tags = {k: dict(sorted(v.items())) for k, v in (file_tags or {}).items()}
        self.force = False  # re-read every file given, even when unchanged (`ingest_files(force=True)`)
        # what a changed file's re-ingest does with its chunk edits (rag/chunk_edits.py: keep or drop)
        self.edits = check_mode(edits)
        # source (path relative to the folder) -> the title its document gets instead of the parsed one
        # (`rag eval` gives each corpus passage its dataset title; its file holds the text alone)
        self.titles = dict(titles or {})
        self.limits = limits or ParseLimits()
        self.ocr = ocr
        self.chunker = chunker
        self.tags = dict(sorted((tags or {}).items()))
        self.question_writer = question_writer
        self.batch_chunks = batch_chunks
        self.embed_batch = max(1, embed_batch)  # texts per encode_corpus call (one progress tick each)
        self.progress = progress
        self.prefetch = max(0, prefetch)  # files prepared ahead in a thread while a batch embeds (0: inline)
        self.write_behind = max(0, write_behind)  # batches waiting to be written in a thread (0: inline)
        self._known = self._embedded = 0
        questions = question_writer.n if question_writer else 0
        self.signature = f"{chunker.signature}|q{questions}"

    # public ------------------------------------------------------------------------------------
    def ingest_folder(self, root: Path, prune: bool = True, follow_links: bool = False) -> IngestReport:
        root = root.resolve()
        if not root.is_dir():
            raise ParseError(f"not a folder: {root}", field="path")
        scan = scan_folder(root, follow_links=follow_links)
        skipped = [FileResult(self._source(root, p), "skipped", reason) for p, reason in scan.skipped]
        return self._run(root, scan.files, prune=prune, skipped=skipped)

    def ingest_files(self, root: Path, paths: Sequence[Path], force: bool = False) -> IngestReport:
        """Ingest some files whose sources are their paths relative to `root` (no pruning);
        `force`: re-parse and re-chunk them even when their bytes and settings are unchanged."""
        self.force = force
        try:
            return self._run(root.resolve(), [p.resolve() for p in paths], prune=False)
        finally:
            self.force = False

    # internals ---------------------------------------------------------------------------------
    def _run(self, root: Path, paths: list[Path], prune: bool, skipped: Sequence[FileResult] = ()) -> IngestReport:
        started = time.perf_counter()
        self._known = self._embedded = 0
        report = IngestReport(self.kb.name, self.kb.embedder.name)
        report.files.extend(skipped)
        catalog = self.kb.catalog
        wanted = {self._source(root, p): (p, root) for p in paths}
        for doc in catalog.docs_with_garbage(self.kb.name):  # swapped, old chunks not yet deleted
            self.kb.delete_garbage(doc)
        # documents a killed run left half-done: redo them when their file is still there
        for doc in catalog.list_docs(self.kb.name):
            if doc.state == "indexed":
                continue
            origin_path = Path(doc.origin) / doc.source
            if doc.state == "pending" and origin_path.is_file():
                wanted.setdefault(doc.source, (origin_path, Path(doc.origin)))
            else:
                report.files.append(self._remove(doc, "interrupted earlier and its file is gone"))
        if prune:
            for doc in catalog.list_docs(self.kb.name, state="indexed"):
                if Path(doc.origin) == root and doc.source not in wanted:
                    report.files.append(self._remove(doc, "no longer in the folder"))
        batch: list[_Prepared] = []
        # reading, parsing and chunking (no writes) run ahead in a thread; results come in order
        outcomes = prefetched(wanted.items(), lambda entry: self._prepare(entry[1][0], entry[0], entry[1][1]),
                              self.prefetch)
        # and the writes run behind in another thread, each document as soon as its chunks are embedded
        writer: OrderedWriter[tuple[list[FileResult], float]] = OrderedWriter(self.write_behind)
        with closing(outcomes):
            try:
                for prepared, ocr_seconds in outcomes:
                    report.ocr_seconds += ocr_seconds
                    if isinstance(prepared, FileResult):  # skipped or unchanged: reported in its place
                        writer.put(([prepared], 0.0))
                        self._collect(writer.ready(), report)
                        continue
                    self._known += len(prepared.chunks)
                    self._tick(prepared.record.source, report)
                    batch.append(prepared)
                    if sum(len(p.chunks) for p in batch) >= self.batch_chunks:
                        self._flush(batch, report, writer)
                        batch = []
                self._flush(batch, report, writer)
                self._collect(writer.finish(), report)
            finally:
                writer.close()  # on an error too: what was submitted is written (unless a write failed)
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _source(root: Path, path: Path) -> str:
        try:
            return path.relative_to(root).as_posix()
        except ValueError as exc:
            raise ParseError(f"{path} is not inside {root}", field="path") from exc

    def _prepare(self, path: Path, source: str, origin: Path) -> tuple[_Prepared | FileResult, float]:
        """The document ready to embed, or its result when it is skipped or unchanged; and the
        seconds OCR took. Only reads (the file, the catalog): it runs ahead in the prefetch thread."""
        catalog = self.kb.catalog
        old = catalog.find_doc_by_source(self.kb.name, source)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            return FileResult(source, "skipped", unsupported_reason(path)), 0.0
        try:
            # read once: hashed here, parsed from memory below; only a regular file is opened
            data, stat = read_file(path, self.limits)
        except ParseError as exc:
            log.warning("skipped %s: %s", source, exc.message)
            return FileResult(source, "skipped", exc.message), 0.0
        content_hash = sha256_hex(data)
        # PDFs and images parsed with OCR off are re-read when it is turned back on (and the reverse)
        ocr_off = path.suffix.lower() in OCR_SUFFIXES and not self.ocr.enabled
        signature = self.signature + ("|ocr-off" if ocr_off else "")
        title = self.titles.get(source, "").strip()
        tags = self.file_tags.get(source, self.tags)
        if (not self.force and old is not None and old.state == "indexed" and old.content_hash == content_hash
                and ocr_unchanged(old.chunker, signature, self.ocr) and old.tags == tags
                and (not title or old.title == title)):
            return FileResult(source, "unchanged", note=_stopped_note(old.chunker)), 0.0
        ocr_seconds = 0.0
        ocr = self.ocr
        if ocr.progress is not None:  # OCR's pages reported under this file's source, not the parser's stem
            report = ocr.progress
            ocr = replace(ocr, progress=lambda _name, page, pages: report(source, page, pages))
        try:
            parsed = parse_bytes(data, path.suffix, path.name, self.limits, ocr)
            del data
            if title:
                parsed.title = title
            ocr_seconds = float(parsed.metadata.get("ocr_seconds") or 0.0)
            spans = self.chunker.split(parsed)
        except ParseError as exc:
            log.warning("skipped %s: %s", source, exc.message)
            return FileResult(source, "skipped", exc.message), ocr_seconds
        if not spans:
            return FileResult(source, "skipped", "no text to index"), ocr_seconds
        stopped = parsed.metadata.get("ocr_stopped")
        record = DocRecord(self.kb.name, doc_id_for(self.kb.name, source), source, str(origin), content_hash, stat.st_mtime,
                           stat.st_size, parsed.title, str(parsed.metadata.get("format", path.suffix.lower())),
                           tags, signature + (f"{OCR_STOPPED}{stopped}" if stopped else ""), "pending", [], [],
                           time.time())
        chunks = self._chunks(record, parsed, spans)
        edits = None
        if old is not None:  # the edits of its chunks, re-applied (or dropped) as the ingest's `edits` says
            edits = reapply(catalog.chunk_edits(self.kb.name, record.doc_id), chunks, record,
                            changed=old.content_hash != content_hash, mode=self.edits)
            chunks, record.disabled_ids = edits.chunks, edits.disabled_ids
        old_ids = set(old.chunk_ids) | set(old.pending_ids) if old else set()
        status = "updated" if old is not None and old.state == "indexed" else "indexed"
        return _Prepared(record, chunks, old_ids, status, str(parsed.metadata.get("note", "")),
                         "; ".join(parsed.metadata.get("ocr_skipped") or ()), edits), ocr_seconds

    def _chunks(self, record: DocRecord, parsed: ParsedDocument, spans) -> list[Chunk]:
        chunks = []
        for span in spans:
            cid = chunk_id_for(self.kb.name, record.source, span.start, span.end, span.text)
            ocr, ocr_confidence = chunk_ocr(parsed.metadata, span.start, span.end)
            chunks.append(Chunk(id=cid, kb=self.kb.name, doc_id=record.doc_id, source=record.source, text=span.text,
                                start=span.start, end=span.end, title=parsed.title, section_path=span.section_path,
                                page=span.page, kind=span.kind,
                                embed_text=span.embed_text,
                                doc_hash=record.content_hash, mtime=record.mtime, tags=record.tags, ocr=ocr,
                                ocr_confidence=ocr_confidence, pages=span.pages))
        if self.question_writer is not None:
            extra = []
            for chunk, questions in zip(chunks, self.question_writer.generate([c.text for c in chunks])):
                for i, question in enumerate(questions):
                    extra.append(Chunk(id=f"{chunk.id}{EXTRA_SEP}q{i}", kb=chunk.kb, doc_id=chunk.doc_id,
                                       source=chunk.source, text=chunk.text, start=chunk.start, end=chunk.end,
                                       title=chunk.title, section_path=chunk.section_path, page=chunk.page,
                                       kind="question", embed_text=question, doc_hash=chunk.doc_hash,
                                       mtime=chunk.mtime, tags=chunk.tags, parent_id=chunk.id, ocr=chunk.ocr,
                                       ocr_confidence=chunk.ocr_confidence, pages=chunk.pages))
            chunks.extend(extra)
        return chunks

    def _flush(self, batch: list[_Prepared], report: IngestReport, writer: OrderedWriter) -> None:
        """Mark the batch pending, embed it in sub-batches of `embed_batch` (ticking after each) and
        hand its documents to `writer`: with the writer thread on, each group of documents as soon
        as their chunks are embedded, so they are written while the rest of the batch embeds."""
        if not batch:
            return
        self._collect(writer.ready(), report)  # a write that failed meanwhile stops the run here
        for item in batch:
            self.kb.begin_document(item.record, [c.id for c in item.chunks])
        items = [(item.record.source, c.match_text) for item in batch for c in item.chunks]
        ends = list(accumulate(len(item.chunks) for item in batch))  # where each document's vectors end
        parts: list[np.ndarray] = []
        handed = 0  # documents given to the writer
        for i in range(0, len(items), self.embed_batch):
            part = items[i : i + self.embed_batch]
            t0 = time.perf_counter()
            parts.append(np.asarray(self.kb.embedder.encode_corpus([text for _, text in part]), dtype=np.float32))
            report.embed_seconds += time.perf_counter() - t0
            self._embedded += len(part)
            embedded = bisect_right(ends, i + len(part))  # documents whose chunks are all embedded
            if self.write_behind and embedded > handed:
                handed = self._hand_over(batch, ends, parts, handed, embedded, writer)
            self._collect(writer.ready(), report)
            self._tick(part[-1][0], report)
        self._hand_over(batch, ends, parts, handed, len(batch), writer)
        self._collect(writer.ready(), report)

    def _hand_over(self, batch: list[_Prepared], ends: list[int], parts: list[np.ndarray], start: int, stop: int,
                   writer: OrderedWriter) -> int:
        """Submit the writes of documents `start:stop` of `batch` (their vectors are in `parts`)."""
        if stop > start:
            vectors = np.concatenate(parts)[(ends[start - 1] if start else 0) : ends[stop - 1]]
            docs = batch[start:stop]
            writer.submit(lambda: self._write(docs, vectors))
        return stop

    def _write(self, batch: list[_Prepared], vectors: np.ndarray) -> tuple[list[FileResult], float]:
        """Write each document (`vectors`: theirs, in order) and swap it live, one after the other;
        their results and the seconds it took. Runs in the writer thread (or inline): it touches
        the stores and the catalog (both safe across threads), never the report."""
        t0 = time.perf_counter()
        results = []
        offset = 0
        for item in batch:
            n = len(item.chunks)
            edits = item.edits or Reapplied([])
            removed = self.kb.finish_document(item.record, item.chunks, vectors[offset : offset + n], item.old_ids,
                                              drop_edits=edits.dropped)
            offset += n
            results.append(FileResult(item.record.source, item.status, item.partial, n, removed, item.note,
                                      edits.kept, len(edits.dropped)))
        return results, time.perf_counter() - t0

    def _collect(self, done: list[tuple[list[FileResult], float]], report: IngestReport) -> None:
        """Add finished results to the report, ticking after each (in the caller's thread)."""
        for results, seconds in done:
            report.write_seconds += seconds
            for result in results:
                report.files.append(result)
                self._tick(result.source, report, result)

    def _remove(self, doc: DocRecord, reason: str) -> FileResult:
        return FileResult(doc.source, "removed", reason, 0, self.kb.remove_document(doc))

    def _tick(self, source: str, report: IngestReport, done: FileResult | None = None) -> None:
        if self.progress is not None:
            self.progress(IngestProgress(source, len(report.files), self._known, self._embedded,
                                         report.chunks_added, done))


def ocr_unchanged(recorded: str, signature: str, ocr: OcrOptions) -> bool:
    """Whether a document recorded under signature `recorded` is up to date under `signature`: the
    same, or the same but for the OCR budget that stopped it ("...|ocr-stopped:RAG_OCR_MAX_PAGES=2"),
    as long as `ocr` has not raised that budget (a re-run with the same settings never OCRs it again;
    a larger budget reads the rest)."""
    if recorded == signature:
        return True
    base, sep, stopped = recorded.partition(OCR_STOPPED)
    setting, _, value = stopped.partition("=")
    if not sep or base != signature:
        return False
    try:
        return ocr.budget(setting) <= float(value)
    except ValueError:
        return False


def _stopped_note(recorded: str) -> str:
    """What an unchanged document indexed in part says: the OCR budget it was read under."""
    _, sep, stopped = recorded.partition(OCR_STOPPED)
    return f"indexed in part: OCR stopped at {stopped} (raise it to read the rest)" if sep else ""


def iter_supported(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if p.suffix.lower() in SUPPORTED_SUFFIXES]
