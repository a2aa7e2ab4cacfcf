"""Background ingest jobs for uploads: a small thread pool, one writer per knowledge base
(`KnowledgeBases.writing`, shared with the CLI), status and per-file results kept in the jobs
database (`<data_dir>/jobs.sqlite`, or the PostgreSQL catalog that every replica shares) so
`GET /v1/jobs/{id}` answers after a restart and from any replica.

Statuses: queued -> running -> succeeded | partial (some files skipped) | failed.

Each unfinished job is leased by the replica running it (`lease_holder`, `lease_until`), renewed
every third of `job_lease_s`. A job whose replica stopped (killed, crashed, host lost) is claimed by
another replica, or by the restarted one, once the lease has expired; a holder on the same host
whose process is gone is known dead at once, so a restart resumes its jobs without waiting. The
claim is one compare-and-set on the lease, so exactly one replica resumes a job; the write lock of
the knowledge base keeps even a replica that stalled past its lease from writing beside it.

A resumed job is marked `interrupted`, then run in the pool: files still staged are moved in, files
already indexed with their uploaded bytes are reported as such ("indexed before the server stopped"),
the others are ingested, and failures put the previous version back, as in a normal job. The job
record says so (`recovery`). At start, staging folders and `.bak` copies that no unfinished job will
finish are cleaned up (api/job_files.py, which moves, settles and keeps the files of every job). The
staged and uploaded files live in `<data_dir>/uploads`: replicas on several hosts share it as a
volume (docs/scaling.md).

A `reindex` job (no files) re-embeds the knowledge base with the server's model
(`KnowledgeBases.reindex`, under its write lock; progress: chunks embedded of `chunks_known`). A
resumed one runs the reindex again from the start: a killed reindex leaves either the old
collection live (its half-written new one an orphan the next reindex removes) or, once switched,
the new one live (the old one the orphan): either way running it again is correct."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from api.errors import Conflict
from api.job_files import JobFiles
from api.uploads import remove_tree
from api.url_import import fetch
from ingest.runner import IngestProgress, IngestReport
from ingest.service import build_ingestor
from rag.chunk_edits import KEEP
from rag.db import DB_ERRORS, Database
from rag.errors import InvalidRequest, NotFound, RagError
from rag.factory import Services

log = logging.getLogger(__name__)
FINAL = ("succeeded", "partial", "failed")
UNFINISHED = ("queued", "running", "interrupted")
OK_STATUSES = ("indexed", "updated", "unchanged")
INDEXED_BEFORE = "indexed before the server stopped"
MIGRATIONS = [
    ("""CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        kb TEXT NOT NULL,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        data TEXT NOT NULL
    )""",),  # 1: the schema before versioning
    (  # 2: leases, so that any replica can resume the job of one that stopped
        "ALTER TABLE jobs ADD COLUMN lease_holder TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE jobs ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at)",
    ),
]
_LIVE_HOLDERS: set[str] = set()  # the lease holders (JobManagers) of this process that are open


@dataclass
class Job:
    id: str
    kb: str
    owner: str
    status: str
    created_at: float
    files: list[dict[str, Any]]
    tags: dict[str, str] = field(default_factory=dict)
    edits: str = KEEP  # what re-ingesting a changed file does with its chunk edits (rag/chunk_edits.py)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    error: str | None = None
    recovery: str | None = None  # what a restart found and did, for a job the server stopped in
    kind: str = "upload"  # JOB_KINDS: "upload" | "url" (fetched first) | "reparse" (the stored files, forced)
    # | "reindex" (no files: the knowledge base re-embedded with the server's model)
    chunking: dict[str, Any] = field(default_factory=dict)  # chunking overrides of a re-parse
    retry_of: str | None = None  # the job whose failed files this one retries
    current_file: str | None = None  # the file last worked on while running

    @property
    def errors(self) -> list[dict[str, str]]:
        return [{"file": f["filename"], "reason": f.get("reason") or f["status"]} for f in self.files
                if f["status"] not in OK_STATUSES + ("queued", "running")]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("owner")
        data["errors"] = self.errors
        return data


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


def new_holder() -> str:
    """A lease holder's name: host, process id and a token (one per JobManager)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_gone(holder: str) -> bool:
    """Whether the lease holder is known to be gone without waiting for its lease: a holder of this
    host whose process has exited, or one of this process that was closed (a holder of another host
    is gone only when its lease expires)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return not holder  # a job from before leases has no holder
    pid = int(pid_text)
    if pid == os.getpid():
        return holder not in _LIVE_HOLDERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class JobManager:
    """The ingest jobs of one replica. `db`: the jobs database (a SQLite path, a PostgreSQL URL or
    an open Database), shared by the replicas of a deployment."""

    def __init__(self, services: Services, db: Database | str | Path, *, workers: int = 2,
                 on_finish: Callable[[Job], None] | None = None, lease_s: float | None = None) -> None:
        self.services = services
        self.on_finish = on_finish
        self.lease_s = lease_s if lease_s is not None else services.settings.job_lease_s
        self.holder = new_holder()
        self.files = JobFiles(services.data_dir, services.catalog, services.settings.failed_upload_keep_hours)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}  # jobs this replica runs that are not finished
        self._db = Database.of(db)
        self._db.migrate("jobs", MIGRATIONS)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-job")
        _LIVE_HOLDERS.add(self.holder)
        self._stopping = threading.Event()
        self._claim(startup=True)
        self._renewer = threading.Thread(target=self._renew_loop, name="ingest-job-leases", daemon=True)
        self._renewer.start()

    # public --------------------------------------------------------------------------------------
    def submit(self, job: Job, staged: dict[str, Path]) -> Job:
        """Queue `job`; `staged` maps each file name to its staged copy, in `staging_dir(job.id)`
        (the folder is removed when the job ends)."""
        folder = self.files.staging(job.id)
        if any(path.parent != folder for path in staged.values()):
            raise ValueError(f"staged files of {job.id} must be in {folder}")
        job.progress = {"files_total": len(job.files), "files_done": 0, "chunks_known": 0, "chunks_embedded": 0,
                        "chunks_done": 0}
        with self._lock:
            self._jobs[job.id] = job
            self._save(job)
        self._pool.submit(self._run, job)
        return job

    def retry(self, job_id: str, owner: str) -> tuple[Job, list[dict[str, str]]]:
        """A new job (`retry_of`) for the failed files of a finished job whose bytes are still kept
        (moved from its retry folder into the new job's staging), or whose URL can be fetched again,
        or (a re-parse) whose stored upload is there; and the failed files that cannot be retried,
        with why. Conflict while the job runs; InvalidRequest when no file can be retried."""
        old = self.get(job_id)
        if old.status not in FINAL:
            raise Conflict(f"job {job_id} is {old.status}: retry its failed files once it has finished",
                           field="job_id")
        if old.kind == "reindex":
            if old.status != "failed":
                raise InvalidRequest(f"job {job_id} has {old.status}: nothing to retry", field="job_id")
            return self.submit(Job(new_job_id(), old.kb, owner, "queued", time.time(), [], kind="reindex",
                                   retry_of=old.id), {}), []
        new_id = new_job_id()
        retried = self.files.retried(old, new_id, OK_STATUSES)
        if not retried.entries:
            detail = "; ".join(f"{f['file']}: {f['reason']}" for f in retried.not_retried) or "every file was indexed"
            raise InvalidRequest(f"job {job_id} has no failed file that can be retried ({detail})", field="job_id")
        job = Job(new_id, old.kb, owner, "queued", time.time(), retried.entries, tags=old.tags, kind=old.kind,
                  chunking=old.chunking, retry_of=old.id)
        return self.submit(job, retried.staged), retried.not_retried

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id in self._jobs:
                return Job(**asdict(self._jobs[job_id]))
        row = self._db.one("SELECT data FROM jobs WHERE id=?", (job_id,))
        if row is None:
            raise NotFound(f"unknown job {job_id!r}", field="job_id")
        return Job(**json.loads(row["data"]))

    def list(self, kbs: Callable[[str], bool], limit: int = 50) -> list[Job]:
        rows = self._db.query("SELECT data FROM jobs ORDER BY created_at DESC LIMIT ?", (limit * 4,))
        jobs = [Job(**json.loads(r["data"])) for r in rows]
        return [j for j in jobs if kbs(j.kb)][:limit]

    def unfinished(self, kb: str) -> list[Job]:
        """The jobs of knowledge base `kb` queued or running, on any replica."""
        rows = self._db.query("SELECT data FROM jobs WHERE kb=? AND status IN (?, ?, ?) ORDER BY created_at",
                              (kb, *UNFINISHED))
        return [Job(**json.loads(r["data"])) for r in rows]

    def active(self) -> int:
        with self._lock:
            return len(self._jobs)

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Poll until the job has finished (tests, the CLI); returns its final state."""
        deadline = time.monotonic() + timeout
        while (job := self.get(job_id)).status not in FINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(0.02)
        return job

    def close(self, wait: bool = True) -> None:
        self._stopping.set()
        self._renewer.join()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        _LIVE_HOLDERS.discard(self.holder)
        with self._lock:
            self._db.close()

    # internals -----------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        """Write the job's record; an unfinished job's lease is this replica's, renewed."""
        final = job.status in FINAL
        self._db.upsert("jobs", {"id": job.id, "kb": job.kb, "owner": job.owner, "status": job.status,
                                 "created_at": job.created_at, "data": json.dumps(asdict(job), ensure_ascii=False),
                                 "lease_holder": "" if final else self.holder,
                                 "lease_until": 0.0 if final else time.time() + self.lease_s}, ("id",))

    def _update(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            self._save(job)
            if job.status in FINAL:
                self._jobs.pop(job.id, None)

    def _renew_loop(self) -> None:
        """Renew the leases of this replica's jobs, and claim those of replicas that stopped."""
        while not self._stopping.wait(self.lease_s / 3):
            with self._lock:
                ids = list(self._jobs)
            until = time.time() + self.lease_s
            try:
                for job_id in ids:
                    self._db.execute("UPDATE jobs SET lease_until=? WHERE id=? AND lease_holder=?",
                                     (until, job_id, self.holder))
                self._claim()
            except DB_ERRORS as exc:  # the database is away: try again next round, the jobs run on
                log.warning("ingest job leases: the jobs database failed: %s", exc)

    def _claim(self, startup: bool = False) -> None:
        """Resume every unfinished job whose holder is gone (lease expired, or its process known
        dead), oldest first and ahead of any new job; at start, before that, clean the staging
        folders and backups that no unfinished job will finish."""
        rows = self._db.query("SELECT data, lease_holder, lease_until FROM jobs WHERE status IN (?, ?, ?) "
                              "AND lease_holder<>? ORDER BY created_at", (*UNFINISHED, self.holder))
        if startup:  # before any job runs here: no race on a file
            self.files.clean(keep={json.loads(r["data"])["id"] for r in rows})
        now = time.time()
        for row in rows:
            if row["lease_until"] >= now and not holder_gone(row["lease_holder"]):
                continue
            until = now + self.lease_s
            if not self._db.execute("UPDATE jobs SET lease_holder=?, lease_until=? WHERE id=? AND lease_holder=? "
                                    "AND lease_until=?", (self.holder, until, json.loads(row["data"])["id"],
                                                          row["lease_holder"], row["lease_until"])):
                continue  # another replica claimed it first
            job = Job(**json.loads(row["data"]))
            gone = row["lease_holder"] or "a server before job leases"
            log.warning("ingest job %s (%s) was %s when its server %s stopped: resuming it", job.id, job.kb,
                        job.status, gone)
            job.recovery = (f"the server stopped while this job was {job.status}; resumed at restart"
                            if startup and holder_gone(row["lease_holder"]) else
                            f"the server stopped while this job was {job.status} ({gone}); resumed by {self.holder} "
                            "after its lease expired")
            job.status = "interrupted"
            job.progress = {"files_total": len(job.files), "files_done": 0, "chunks_done": 0}
            with self._lock:
                self._jobs[job.id] = job
                self._save(job)
            self._pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        """Run a job, or resume one the server stopped in (its files may be staged, in place, or both)."""
        staging = self.files.staging(job.id)
        kept: set[str] = set()  # files whose uploaded bytes the catalog holds indexed, once settled
        try:
            if job.kind == "reindex":
                self._reindex(job)
                return
            if job.kind == "url" and not self._fetch(job, staging):
                return
            with self.services.kbs.writing(job.kb, wait=True):
                if not self.services.kbs.exists(job.kb):
                    raise NotFound(f"knowledge base {job.kb!r} was deleted before the job ran", field="kb")
                self._update(job, status="running", started_at=job.started_at or time.time())
                report, before = self._ingest(job, kept)
            self._finish(job, report, before)
        except RagError as exc:
            log.warning("ingest job %s failed: %s", job.id, exc.message)
            self._fail(job, exc.message, kept)
        except Exception as exc:  # a crash must land in the job record, not vanish inside the pool
            # the client gets a short reason; the exception (it may name paths or objects) stays in the log
            log.exception("ingest job %s crashed: %s: %s", job.id, type(exc).__name__, exc)
            self._fail(job, "internal error while indexing; the server log has the details", kept)
        finally:
            remove_tree(staging)
            self.files.clean_retries(job.kb)
            if self.on_finish is not None:
                self.on_finish(job)

    def _reindex(self, job: Job) -> None:
        """Re-embed the job's knowledge base with the server's model (run again from the start when
        resumed: see the module docstring)."""
        kbs = self.services.kbs
        last_save = [0.0]

        def progress(done: int, total: int) -> None:
            job.progress.update(chunks_known=total, chunks_embedded=done, chunks_done=done)
            if time.monotonic() - last_save[0] > 0.5 or done == total:
                last_save[0] = time.monotonic()
                self._update(job)

        with kbs.writing(job.kb, wait=True):
            record = kbs.catalog.get_kb(job.kb)
            if record is None:
                raise NotFound(f"knowledge base {job.kb!r} was deleted before the job ran", field="kb")
            self._update(job, status="running", started_at=job.started_at or time.time())
            chunks, collection = kbs.reindex(job.kb, wait=True, progress=progress)
        if job.recovery:
            job.recovery += ": the resumed job re-embedded it again from the start"
        summary = {"chunks": chunks, "collection": collection, "from_embed_model": record.embed_model,
                   "from_dim": record.dim, "embed_model": kbs.embedder.name, "dim": kbs.embedder.dim}
        self._update(job, status="succeeded", summary=summary, finished_at=time.time(), current_file=None,
                     progress={**job.progress, "chunks_known": chunks, "chunks_embedded": chunks, "chunks_done": chunks})

    def _fetch(self, job: Job, staging: Path) -> bool:
        """Fetch a URL job's page into its staging folder, outside the write lock (once: a resumed
        job that fetched it goes on). False when the fetch failed: the job is finished, failed, with
        the reason on its file."""
        entry = job.files[0]
        if entry.get("fetched"):
            return True
        s = self.services.settings
        self._update(job, status="running", started_at=job.started_at or time.time(), current_file=entry["url"])
        try:
            path = fetch(entry["url"], staging, limit_mb=s.max_upload_mb, timeout=s.url_import_timeout,
                         allow_private=s.url_import_allow_private)
        except RagError as exc:
            log.warning("URL import job %s: %s", job.id, exc.message)
            entry.update(status="failed", reason=f"fetch failed: {exc.message}")
            self._update(job, status="failed", files=job.files, error=f"{entry['url']}: {exc.message}",
                         finished_at=time.time(), current_file=None)
            return False
        entry.update(filename=path.name, size=path.stat().st_size, fetched=True)
        self._update(job, files=job.files)
        return True

    def _fail(self, job: Job, reason: str, kept: set[str]) -> None:
        """Mark a job failed (a store write failed, the knowledge base went away, ...): each file
        whose uploaded bytes the catalog holds indexed (`kept`) says so, every other one is failed
        with `reason` (its document stays pending or keeps its previous version: never reported
        indexed), and the job never says succeeded."""
        files = []
        for entry in job.files:
            indexed = entry["filename"] in kept
            files.append({**entry, "status": "indexed" if indexed else "failed",
                          "reason": "indexed before the job failed" if indexed else reason})
        self._update(job, status="failed", files=files, error=reason, finished_at=time.time(), current_file=None)

    def _ingest(self, job: Job, kept: set[str]) -> tuple[IngestReport, set[str]]:
        """Move the staged files in (the previous version of each kept as a backup) and ingest them.
        Idempotent, so that a resumed job redoes only what is left. Returns the report and the files
        the catalog held indexed with their uploaded bytes before this run (a resumed job's); adds
        to `kept` the files left in place indexed with their uploaded bytes (on an error too)."""
        names = [entry["filename"] for entry in job.files]
        moved = self.files.move_in(job.kb, job.id, names)
        before = {t.name for t in moved.targets if job.recovery and self.files.indexed_as_is(job.kb, t)}
        last_save = [0.0]

        entries = {entry["filename"]: entry for entry in job.files}

        def save() -> None:
            if time.monotonic() - last_save[0] > 0.5:
                last_save[0] = time.monotonic()
                self._update(job)

        def progress(step: IngestProgress) -> None:
            job.progress.update(files_done=min(step.files_done, len(job.files)), chunks_known=step.chunks_known,
                                chunks_embedded=step.chunks_embedded, chunks_done=step.chunks_written)
            job.current_file = step.source
            entry = entries.get(step.done.source) if step.done else None
            if entry is not None:  # a file's result as soon as it has one (the job's end says it again)
                entry.update(status=step.done.status, reason=step.done.reason, chunks_added=step.done.chunks_added)
            save()

        def page_progress(source: str, page: int, pages: int) -> None:
            """OCR, page by page, of the file `source` (its name in the uploads folder)."""
            entry = entries.get(source)
            if entry is not None:
                entry.update(pages_done=page, pages_total=pages)
                job.current_file = entry["filename"]
            save()

        reparse = job.kind == "reparse"
        try:
            kept_docs = ([d for d in (self.services.catalog.find_doc_by_source(job.kb, n) for n in names) if d]
                         if reparse else [])
            # a re-parse keeps each document's own tags and title (edited ones included)
            ingestor = build_ingestor(self.services, job.kb, tags=job.tags, progress=progress,
                                      page_progress=page_progress, overrides=job.chunking, edits=job.edits,
                                      overrides_by="the re-parse's settings: ocr false",
                                      file_tags={d.source: d.tags for d in kept_docs},
                                      titles={d.source: d.title for d in kept_docs if d.title})
            return ingestor.ingest_files(moved.folder, moved.targets, force=reparse), before
        finally:
            for name in names:
                # a re-parsed file is the document's source already: it stays whatever happened
                if reparse or self.files.settle(job.kb, moved.folder / name, moved.backups.get(name), job.id):
                    kept.add(name)

    def _finish(self, job: Job, report: IngestReport, before: set[str] = frozenset()) -> None:
        by_source = {f.source: f for f in report.files}
        catalog = self.services.catalog
        files = []
        for entry in job.files:
            result = by_source.get(entry["filename"])
            record = catalog.find_doc_by_source(job.kb, entry["filename"])
            status = result.status if result else "skipped"
            reason = result.reason if result else "not processed"
            if entry["filename"] in before and status == "unchanged":
                status, reason = "indexed", INDEXED_BEFORE
            elif job.recovery and not result:
                reason = "its uploaded copy was lost when the server stopped; upload it again"
            files.append({**entry, "status": status, "reason": reason,
                          "chunks_added": result.chunks_added if result else 0,
                          "chunks_removed": result.chunks_removed if result else 0,
                          "note": result.note if result else "",
                          "edits_kept": result.edits_kept if result else 0,
                          "edits_dropped": result.edits_dropped if result else 0,
                          "doc_id": record.doc_id if record is not None and status in OK_STATUSES else None})
        ok = sum(1 for f in files if f["status"] in OK_STATUSES)
        status = "succeeded" if ok == len(files) else "partial" if ok else "failed"
        summary = {k: v for k, v in report.as_dict().items() if k != "files"}
        summary["other_changes"] = [f.__dict__ for f in report.files if f.source not in {e["filename"] for e in files}]
        progress = {**job.progress, "files_done": len(files), "chunks_done": report.chunks_added}
        reasons = "; ".join(f"{f['filename']}: {f['reason']}" for f in files)
        error = None if ok else f"no file could be indexed: {reasons}"
        if job.recovery:
            resumed = sum(1 for f in files if f["status"] in OK_STATUSES and f["reason"] != INDEXED_BEFORE)
            job.recovery = (f"{job.recovery}: {len(before)} file(s) were found indexed and {resumed} were indexed by "
                            "the resumed job" + (f", {len(files) - ok} could not be" if ok < len(files) else ""))
        self._update(job, status=status, files=files, summary=summary, progress=progress, error=error,
                     finished_at=time.time(), current_file=None)
