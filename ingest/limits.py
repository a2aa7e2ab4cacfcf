"""Bounds on what one file may cost to parse: its size, what a zip container (DOCX, XLSX) unpacks
to, and the rows, cells and seconds its reader may spend (`ParseBudget`, one per file, checked by
every format reader as it goes). Every check raises `ParseError` with a reason that names the
setting, so the file is skipped (never indexed in part) and the rest of the folder is indexed."""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass, field

from rag.errors import ParseError

MIB = 1024 * 1024
_READ = MIB
# a member this small cannot be a bomb whatever its ratio (tiny XML parts compress very well)
_RATIO_GRACE_BYTES = MIB


@dataclass(frozen=True)
class ParseLimits:
    max_file_mb: float = 100.0  # RAG_MAX_FILE_MB
    max_unzipped_mb: float = 200.0  # RAG_MAX_UNZIPPED_MB: per member and in all
    max_zip_ratio: float = 100.0  # RAG_MAX_ZIP_RATIO: uncompressed / compressed size of a member
    # plain text and Markdown over this go through the linear paragraph splitter instead of
    # unstructured's partitioners (which run spaCy on every paragraph: ~13 s per MB)
    large_text_mb: float = 1.0
    max_rows: int = 200_000  # RAG_PARSE_MAX_ROWS: table rows (CSV, TSV, XLSX) and JSON records of one file
    max_cells: int = 5_000_000  # RAG_PARSE_MAX_CELLS: table cells (a row counts to its last filled column)
    max_seconds: float = 120.0  # RAG_PARSE_MAX_SECONDS: reading one file's text (OCR has its own bounds)

    def budget(self) -> ParseBudget:
        """A fresh budget for one file; its clock starts now."""
        return ParseBudget(self.max_rows, self.max_cells, self.max_seconds)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MIB)

    @property
    def max_unzipped_bytes(self) -> int:
        return int(self.max_unzipped_mb * MIB)

    @property
    def large_text_bytes(self) -> int:
        return int(self.large_text_mb * MIB)


@dataclass
class ParseBudget:
    """What one file's reader may still spend. Readers call `row()` per table row or record and
    `tick()` per paragraph, element or page; the first one past a bound raises `ParseError` naming
    the setting and how far the reader got, and the file is skipped with that reason."""

    max_rows: int
    max_cells: int
    max_seconds: float
    rows: int = 0
    cells: int = 0
    started: float = field(default_factory=time.monotonic)

    def row(self, cells: int = 0) -> None:
        self.rows += 1
        self.cells += cells
        if self.rows > self.max_rows:
            raise ParseError(f"too many rows: over {self.max_rows} (RAG_PARSE_MAX_ROWS={self.max_rows})",
                             field="path")
        if self.cells > self.max_cells:
            raise ParseError(f"too many cells: over {self.max_cells} in {self.rows} rows "
                             f"(RAG_PARSE_MAX_CELLS={self.max_cells})", field="path")
        self.tick()

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` off the clock: the OCR of a scanned page, which has its own per-file bounds."""
        self.started += seconds

    def tick(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > self.max_seconds:
            done = f" after {self.rows} rows" if self.rows else ""
            raise ParseError(f"parsing took too long: stopped{done} at {elapsed:.1f} s "
                             f"(RAG_PARSE_MAX_SECONDS={self.max_seconds:g})", field="path")


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MB"


def check_file_size(size: int, limits: ParseLimits) -> None:
    if size > limits.max_file_bytes:
        raise ParseError(f"file too large: {_mb(size)}, over RAG_MAX_FILE_MB={limits.max_file_mb:g}", field="path")


def check_zip(data: bytes, limits: ParseLimits, kind: str = "zip") -> None:
    """Refuse a zip container whose members (declared or actual sizes) unpack past the limits.
    Declared sizes and ratios are checked first (cheap); then every member is inflated in 1 MB
    steps and counted, stopping at the limit, so a member that lies about its size is caught
    without ever holding more than one step in memory."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ParseError(f"corrupt {kind}: not a readable zip container ({exc})", field="path") from exc
    limit = limits.max_unzipped_bytes
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        total = 0
        for member in members:
            _check_member(member.filename, member.file_size, member.compress_size, limits)
            total += member.file_size
            if total > limit:
                raise ParseError(f"zip container unpacks to more than {_mb(limit)} in all "
                                 f"(RAG_MAX_UNZIPPED_MB={limits.max_unzipped_mb:g})", field="path")
        actual_total = 0
        for member in members:
            actual = 0
            try:
                with archive.open(member) as handle:
                    while block := handle.read(_READ):
                        actual += len(block)
                        actual_total += len(block)
                        if actual > member.file_size or actual_total > limit:
                            raise ParseError(f"zip member {member.filename!r} unpacks past its declared size or "
                                             f"the limit (RAG_MAX_UNZIPPED_MB={limits.max_unzipped_mb:g})",
                                             field="path")
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
                raise ParseError(f"corrupt {kind}: zip member {member.filename!r}: {exc}", field="path") from exc


def _check_member(name: str, size: int, compressed: int, limits: ParseLimits) -> None:
    if size > limits.max_unzipped_bytes:
        raise ParseError(f"zip member {name!r} unpacks to {_mb(size)}, over "
                         f"RAG_MAX_UNZIPPED_MB={limits.max_unzipped_mb:g}", field="path")
    if size > _RATIO_GRACE_BYTES and size > limits.max_zip_ratio * max(compressed, 1):
        raise ParseError(f"zip member {name!r} is compressed {size / max(compressed, 1):.0f}:1, over "
                         f"RAG_MAX_ZIP_RATIO={limits.max_zip_ratio:g} (a decompression bomb?)", field="path")
