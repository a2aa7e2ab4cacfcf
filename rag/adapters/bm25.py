"""Local BM25 index: SQLite holds the tokens and filter fields of every chunk (the durable,
transactional source of truth); scoring runs on in-memory scipy CSC matrices of raw term counts.

Engine choice (measured by `benchmarks/stores.py`, see the report): an inverted index in scipy
beats rank-bm25 by orders of magnitude at query time and, unlike bm25s, supports incremental
adds and deletes without re-indexing. Each `add` appends a small segment (CSC matrix of term
counts over new rows); segments merge when there are more than `max_segments`; deleted rows are
masked until a compaction drops them. IDF and length normalisation are computed at query time
from live statistics, so adds and deletes never invalidate stored weights.

Scoring (Lucene / Qdrant IDF variant, always positive):
    score(d, q) = sum over query tokens t of idf(t) * tf*(k1+1) / (tf + k1*(1 - b + b*|d|/avgdl))
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))
Only chunks sharing at least one token with the query are returned.

Several processes may open the same file (the API server and a CLI ingest): SQLite serialises
the writes, and a reader reloads its in-memory state when `PRAGMA data_version` shows that
another connection committed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from rag.errors import ConfigError
from rag.text import TOKENIZER, tokenize
from rag.types import Chunk, Filter, ScoredId

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (chunk_id TEXT PRIMARY KEY, tokens TEXT NOT NULL, source TEXT NOT NULL,
    doc_id TEXT NOT NULL, tags TEXT NOT NULL, mtime REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_Row = tuple[str, list[str], str, str, list[str], float]  # chunk_id, tokens, source, doc_id, tags, mtime


def chunk_tokens(chunk: Chunk, stopwords: bool = True) -> list[str]:
    """What BM25 matches: the chunk text, plus the embedded text when it differs (a Q&A question);
    an embedded text that is the chunk text under a header (title, section) is taken whole, so
    the text's words count once."""
    embed = chunk.embed_text
    if embed is not None and embed != chunk.text and embed.endswith(chunk.text):
        return tokenize(embed, stopwords=stopwords)
    tokens = tokenize(chunk.text, stopwords=stopwords)
    if embed is not None and embed != chunk.text:
        tokens += tokenize(embed, stopwords=stopwords)
    return tokens


INDEX_FILE = "bm25.sqlite"


def index_names(root: str | Path) -> list[str]:
    """The names of the indexes under `root` (one folder each, named after its collection, as
    `rag.factory` lays them out): what orphan checks compare with the catalog."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / INDEX_FILE).is_file())


class LocalBM25Index:
    """`LexicalIndex` persisted in `<path>/bm25.sqlite` (in memory when `path` is None)."""

    def __init__(self, path: str | Path | None, stopwords: bool = True, k1: float = 1.5, b: float = 0.75,
                 max_segments: int = 8) -> None:
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1} b={b}")
        self.path = Path(path) if path is not None else None
        self.stopwords, self.k1, self.b, self.max_segments = stopwords, k1, b, max_segments
        self._lock = threading.RLock()
        self._pending: list[tuple[str, Any]] | None = None  # in-memory changes of an open transaction
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path / INDEX_FILE) if self.path else ":memory:",
                                   check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._check_meta()
        self._load()

    def _load(self) -> None:
        """(Re)build the in-memory state from SQLite, from the stored tokens."""
        self._reset()
        self._version = self._db.execute("PRAGMA data_version").fetchone()[0]
        rows = [(cid, toks.split(" ") if toks else [], src, doc, json.loads(tags), mtime)
                for cid, toks, src, doc, tags, mtime in self._db.execute("SELECT * FROM chunks")]
        self._apply_add(rows)
        log.info("loaded BM25 index %s with %d chunks", self.path or ":memory:", len(rows))

    def _sync(self) -> None:
        """Reload when another connection (another process: a CLI ingest) committed changes."""
        if self._pending is None and self._db.execute("PRAGMA data_version").fetchone()[0] != self._version:
            self._load()

    def _check_meta(self) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        wanted = {"stopwords": str(self.stopwords), "format": "1"}
        for key, value in wanted.items():
            if key in stored and stored[key] != value:
                raise ConfigError(f"BM25 index at {self.path} was built with {key}={stored[key]}, not {value}")
        # an index written by another tokenizer (indexes from before it was recorded have none)
        # keeps working on its old tokens until `rebuild` re-tokenises the chunk texts
        self.stale = bool(stored) and stored.get("tokenizer") != TOKENIZER
        if not stored:
            wanted["tokenizer"] = TOKENIZER
        self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", list(wanted.items()))

    def _reset(self) -> None:
        self._vocab: dict[str, int] = {}
        self._slot: dict[str, int] = {}  # chunk id -> row
        self._ids: list[str] = []  # row -> chunk id
        self._alive = np.zeros(0, dtype=bool)
        self._length = np.zeros(0, dtype=np.float32)
        self._mtime = np.zeros(0, dtype=np.float64)
        self._source = np.zeros(0, dtype=np.int32)
        self._doc = np.zeros(0, dtype=np.int32)
        self._codes: dict[str, int] = {}  # source / doc_id string -> code
        self._tag_rows: dict[str, list[int]] = {}
        self._segments: list[tuple[int, sparse.csc_matrix]] = []  # (first row, rows x vocab term counts)
        self._live_len = 0.0

    # writes --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LocalBM25Index]:
        """Group adds and deletes into one SQLite transaction, applied in memory on commit."""
        with self._lock:
            if self._pending is not None:  # nested: join the outer transaction
                yield self
                return
            self._pending = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending = None
                raise
            pending, self._pending = self._pending, None
            for op, arg in pending:
                if op == "delete":
                    self._apply_delete(arg)
                else:
                    self._apply_add(arg)

    def add(self, chunks: Sequence[Chunk]) -> None:
        rows = [(c.id, chunk_tokens(c, self.stopwords), c.source, c.doc_id,
                 [f"{k}={v}" for k, v in sorted(c.tags.items())], float(c.mtime)) for c in chunks]
        self._add_rows(rows)

    def add_tokens(self, chunk_id: str, tokens: Sequence[str], payload: dict[str, Any]) -> None:
        """Index pre-tokenised text; `payload` gives source, doc_id, tags (list of k=v) and mtime."""
        self._add_rows([(chunk_id, list(tokens), str(payload.get("source") or ""), str(payload.get("doc_id") or ""),
                         list(payload.get("tags") or []), float(payload.get("mtime") or 0.0))])

    def _add_rows(self, rows: list[_Row]) -> None:
        rows = [(cid, [t for tok in toks for t in tok.split()], src, doc, tags, mt)
                for cid, toks, src, doc, tags, mt in rows]  # tokens are stored space-separated
        with self.transaction():
            self._db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                                 [(cid, " ".join(toks), src, doc, json.dumps(tags), mt)
                                  for cid, toks, src, doc, tags, mt in rows])
            self._pending.append(("add", rows))

    def delete(self, chunk_ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(chunk_ids))
        with self.transaction():
            self._db.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(c,) for c in ids])
            self._pending.append(("delete", ids))

    def rebuild(self, chunks: Sequence[Chunk]) -> None:
        """Replace the whole index by `chunks` tokenised with this version's tokenizer, in one
        transaction (a crash leaves the old index, still marked stale)."""
        with self.transaction():
            self._db.execute("DELETE FROM chunks")
            self._pending.append(("delete", list(self._slot)))
            self.add(chunks)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('tokenizer', ?)", (TOKENIZER,))
        self.stale = False

    def replace(self, delete_ids: Sequence[str], add_chunks: Sequence[Chunk]) -> None:
        """Delete some chunks and add others atomically (a re-ingested document)."""
        with self.transaction():
            self.delete(delete_ids)
            self.add(add_chunks)

    # in-memory state -----------------------------------------------------------------------

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def _apply_delete(self, ids: Sequence[str]) -> None:
        for cid in ids:
            row = self._slot.pop(cid, None)
            if row is not None:
                self._alive[row] = False
                self._live_len -= float(self._length[row])
        if len(self._slot) * 2 < len(self._ids):  # mostly deleted rows: drop them
            self._compact()

    def _apply_add(self, rows: list[_Row]) -> None:
        if not rows:
            return
        by_id = {r[0]: r for r in rows}  # the last occurrence of an id wins, like INSERT OR REPLACE
        rows = list(by_id.values())
        self._apply_delete([r[0] for r in rows if r[0] in self._slot])
        first, n = len(self._ids), len(rows)
        vocab = self._vocab
        term_ids = np.fromiter((vocab.setdefault(t, len(vocab)) for r in rows for t in r[1]), dtype=np.int32)
        lengths = np.fromiter((len(r[1]) for r in rows), dtype=np.int64, count=n)
        doc_rows = np.repeat(np.arange(n, dtype=np.int32), lengths)
        counts = sparse.csc_matrix((np.ones(len(term_ids), dtype=np.float32), (doc_rows, term_ids)),
                                   shape=(n, len(vocab)))
        counts.sum_duplicates()
        self._segments.append((first, counts))
        self._alive = np.concatenate([self._alive, np.ones(n, dtype=bool)])
        self._length = np.concatenate([self._length, lengths.astype(np.float32)])
        self._mtime = np.concatenate([self._mtime, np.fromiter((r[5] for r in rows), np.float64, count=n)])
        self._source = np.concatenate([self._source, np.fromiter((self._code(r[2]) for r in rows), np.int32, count=n)])
        self._doc = np.concatenate([self._doc, np.fromiter((self._code(r[3]) for r in rows), np.int32, count=n)])
        for i, r in enumerate(rows):
            self._slot[r[0]] = first + i
            self._ids.append(r[0])
            for tag in r[4]:
                self._tag_rows.setdefault(tag, []).append(first + i)
        self._live_len += float(lengths.sum())
        if len(self._segments) > self.max_segments or len(self._slot) * 2 < len(self._ids):
            self._compact()

    def _compact(self) -> None:
        """Merge every segment into one and drop deleted rows (rows are renumbered)."""
        width = len(self._vocab)
        keep = np.flatnonzero(self._alive)
        merged = None
        if self._segments:
            widened = [sparse.csc_matrix((m.data, m.indices, np.concatenate(
                [m.indptr, np.full(width - m.shape[1], m.indptr[-1], dtype=m.indptr.dtype)])),
                shape=(m.shape[0], width)) for _, m in self._segments]
            merged = sparse.vstack(widened, format="csr")[keep].tocsc()
        remap = np.full(len(self._ids), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        self._ids = [self._ids[i] for i in keep]
        self._slot = {cid: i for i, cid in enumerate(self._ids)}
        self._alive, self._length = self._alive[keep], self._length[keep]
        self._mtime, self._source, self._doc = self._mtime[keep], self._source[keep], self._doc[keep]
        self._tag_rows = {t: [int(remap[r]) for r in rs if remap[r] >= 0] for t, rs in self._tag_rows.items()}
        self._tag_rows = {t: rs for t, rs in self._tag_rows.items() if rs}
        self._segments = [(0, merged)] if merged is not None and len(keep) else []

    # reads ---------------------------------------------------------------------------------

    def search(self, query: str, limit: int, flt: Filter | None = None) -> list[ScoredId]:
        return self.search_tokens(tokenize(query, stopwords=self.stopwords), limit, flt)

    def search_tokens(self, tokens: Sequence[str], limit: int, flt: Filter | None = None) -> list[ScoredId]:
        with self._lock:
            self._sync()
            n_live = len(self._slot)
            if limit <= 0 or n_live == 0:
                return []
            avgdl = max(self._live_len / n_live, 1e-9)
            scores = np.zeros(len(self._ids), dtype=np.float64)
            for term, q_count in Counter(tokens).items():
                col = self._vocab.get(term)
                if col is None:
                    continue
                rows, tfs = self._postings(col)
                if not len(rows):
                    continue
                df = len(rows)
                idf = math.log(1.0 + (n_live - df + 0.5) / (df + 0.5))
                norm = self.k1 * (1.0 - self.b + self.b * self._length[rows] / avgdl)
                scores[rows] += q_count * idf * tfs * (self.k1 + 1.0) / (tfs + norm)
            candidates = np.flatnonzero(scores > 0)
            if flt is not None and not flt.is_empty() and len(candidates):
                candidates = candidates[self._mask(candidates, flt)]
            if len(candidates) > limit:
                candidates = candidates[np.argpartition(-scores[candidates], limit - 1)[:limit]]
            order = np.lexsort((candidates, -scores[candidates]))
            return [ScoredId(self._ids[r], float(scores[r])) for r in candidates[order]]

    def _postings(self, col: int) -> tuple[np.ndarray, np.ndarray]:
        """Live rows containing term `col` and their term counts, across segments."""
        rows, tfs = [], []
        for first, m in self._segments:
            if col < m.shape[1]:
                lo, hi = m.indptr[col], m.indptr[col + 1]
                if hi > lo:
                    rows.append(m.indices[lo:hi].astype(np.int64) + first)
                    tfs.append(m.data[lo:hi])
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        r, t = np.concatenate(rows), np.concatenate(tfs).astype(np.float64)
        live = self._alive[r]
        return r[live], t[live]

    def _mask(self, rows: np.ndarray, flt: Filter) -> np.ndarray:
        """Same semantics as `Filter.matches`."""
        keep = np.ones(len(rows), dtype=bool)
        if flt.sources:
            keep &= np.isin(self._source[rows], [self._codes[s] for s in flt.sources if s in self._codes])
        if flt.doc_ids:
            keep &= np.isin(self._doc[rows], [self._codes[d] for d in flt.doc_ids if d in self._codes])
        for tag in set(flt.tags):
            keep &= np.isin(rows, self._tag_rows.get(tag, []))
        if flt.mtime_from is not None:
            keep &= self._mtime[rows] >= flt.mtime_from
        if flt.mtime_to is not None:
            keep &= self._mtime[rows] <= flt.mtime_to
        return keep

    def ids(self) -> set[str]:
        with self._lock:
            self._sync()
            return set(self._slot)

    def count(self) -> int:
        with self._lock:
            self._sync()
            return len(self._slot)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def drop(self) -> None:
        """Close the index and delete its files (an in-memory index just forgets everything)."""
        with self._lock:
            self._db.close()
            self._reset()
            if self.path is not None:
                # the log files first: a drop killed in between leaves either a whole index (an orphan that
                # `check` lists and `check --repair` drops) or none, never a stale log that SQLite would
                # replay into the next index created under this name
                for suffix in ("-wal", "-shm", ""):
                    (self.path / f"{INDEX_FILE}{suffix}").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # only when nothing else lives there
