"""The files of upload jobs (api/jobs.py), in `<data_dir>/uploads` (api/uploads.py): a job's staged
files moved in over the knowledge base's uploaded ones (each previous version kept as a `.bak` until
the catalog indexed the new one), settled after the ingest so the uploads folder always matches the
index, failed files kept for a retry for RAG_FAILED_UPLOAD_KEEP_HOURS, and what a stopped server
left behind cleaned up at start.

A file is settled (`settle`) by the catalog: kept when the catalog holds it indexed with exactly its
bytes, else moved to the job's retry folder with the previous version put back. At start
(`clean`), staging folders that no unfinished job will finish are removed once older than
`STAGING_GRACE_S` (a younger one may be an upload another replica is still receiving), and every
`.bak` of a job that is over is settled the same way."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.uploads import RETRY_FOLDER, kb_upload_dir, remove_tree, retry_dir, staging_dir, uploads_root
from rag.catalog import Catalog
from rag.ids import sha256_hex

log = logging.getLogger(__name__)
BACKUP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<job>job_[0-9a-f]+)\.bak$")
STAGING_GRACE_S = 600.0
NOT_KEPT = ("its bytes were not kept (removed after RAG_FAILED_UPLOAD_KEEP_HOURS, or retried already): "
            "upload it again")


@dataclass
class MovedIn:
    """A job's files in the knowledge base's uploads folder: those there now (`targets`) and the
    previous version of each replaced one (`backups`, by name)."""

    folder: Path
    targets: list[Path] = field(default_factory=list)
    backups: dict[str, Path] = field(default_factory=dict)


@dataclass
class Retried:
    """The failed files of a finished job that a new job can take again: its file entries, the
    files staged for it, and the failed files that cannot be retried, with why."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    staged: dict[str, Path] = field(default_factory=dict)
    not_retried: list[dict[str, str]] = field(default_factory=list)


class JobFiles:
    """The uploads folder of `data_dir` as the jobs use it; `catalog` says what is indexed."""

    def __init__(self, data_dir: Path, catalog: Catalog, keep_hours: float) -> None:
        self.data_dir = data_dir
        self.catalog = catalog
        self.keep_hours = keep_hours

    def staging(self, job_id: str) -> Path:
        return staging_dir(self.data_dir, job_id)

    def move_in(self, kb: str, job_id: str, names: list[str]) -> MovedIn:
        """Move the job's staged files in, the previous version of each kept as a backup.
        Idempotent, so that a resumed job redoes only what is left."""
        folder = kb_upload_dir(self.data_dir, kb)
        folder.mkdir(parents=True, exist_ok=True)
        staging = self.staging(job_id)
        moved = MovedIn(folder)
        for name in names:
            target, backup, staged = folder / name, folder / f".{name}.{job_id}.bak", staging / name
            if staged.exists():
                if target.exists() and not backup.exists():
                    os.replace(target, backup)
                os.replace(staged, target)
            if backup.exists():
                moved.backups[name] = backup
            if target.exists():
                moved.targets.append(target)
        return moved

    def indexed_as_is(self, kb: str, target: Path) -> bool:
        """The catalog holds `target` indexed with exactly its bytes."""
        record = self.catalog.find_doc_by_source(kb, target.name)
        try:
            return (record is not None and record.state == "indexed" and target.exists()
                    and record.content_hash == sha256_hex(target.read_bytes()))
        except OSError:
            return False

    def settle(self, kb: str, target: Path, backup: Path | None, job_id: str) -> bool:
        """Keep the uploaded file if the catalog indexed exactly its bytes (True); otherwise move it
        to the job's retry folder and put the previous version back, so the uploads folder always
        matches the index."""
        if self.indexed_as_is(kb, target):
            if backup is not None:
                backup.unlink(missing_ok=True)
            return True
        if target.exists():
            keep = retry_dir(self.data_dir, kb, job_id)
            keep.mkdir(parents=True, exist_ok=True)
            os.replace(target, keep / target.name)
        if backup is not None:
            os.replace(backup, target)
        return False

    def retried(self, old: Any, new_id: str, ok_statuses: tuple[str, ...]) -> Retried:
        """The failed files of the finished job `old` that the job `new_id` can take again: bytes
        still kept (moved from `old`'s retry folder into `new_id`'s staging), a URL to fetch again,
        or (a re-parse) the stored upload."""
        staging, kept = self.staging(new_id), retry_dir(self.data_dir, old.kb, old.id)
        uploads = kb_upload_dir(self.data_dir, old.kb)
        out = Retried()
        for entry in (f for f in old.files if f["status"] not in ok_statuses):
            name, url = entry["filename"], entry.get("url")
            base = {"filename": name, "status": "queued", **({"url": url} if url else {})}
            if old.kind == "reparse" and (uploads / name).is_file():
                out.entries.append({**base, "size": (uploads / name).stat().st_size, "doc_id": entry.get("doc_id")})
            elif old.kind != "reparse" and (kept / name).is_file():
                staging.mkdir(parents=True, exist_ok=True)
                os.replace(kept / name, staging / name)
                out.staged[name] = staging / name
                out.entries.append({**base, "size": out.staged[name].stat().st_size,
                                    **({"fetched": True} if url else {})})
            elif old.kind == "url" and url:
                out.entries.append({**base, "size": 0})  # fetched again
            else:
                out.not_retried.append({"file": name, "reason": NOT_KEPT})
        if kept.is_dir() and not any(kept.iterdir()):
            remove_tree(kept)
        return out

    def clean_retries(self, kb: str) -> None:
        """Remove the kept bytes of failed files older than RAG_FAILED_UPLOAD_KEEP_HOURS."""
        root = kb_upload_dir(self.data_dir, kb) / RETRY_FOLDER
        horizon = time.time() - self.keep_hours * 3600
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                old = folder.stat().st_mtime < horizon
            except FileNotFoundError:
                continue
            if old:
                log.info("removing the kept failed files of %s (older than RAG_FAILED_UPLOAD_KEEP_HOURS)", folder.name)
                remove_tree(folder)

    def clean(self, keep: set[str]) -> None:
        """At start: remove the staging folders and settle the backups that no unfinished job
        (`keep`: their ids) will finish, and the retry folders past their time."""
        root = uploads_root(self.data_dir)
        if not root.is_dir():
            return
        staging_root = root / ".staging"
        for folder in sorted(staging_root.iterdir()) if staging_root.is_dir() else []:
            if folder.name in keep:
                continue
            try:
                age = time.time() - folder.stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= STAGING_GRACE_S:
                log.warning("removing the staging folder of a finished or unknown job: %s", folder.name)
                remove_tree(folder)
        for kb_dir in sorted(p for p in root.iterdir() if p.is_dir() and p != staging_root):
            for backup in sorted(kb_dir.glob(".*.bak")):
                match = BACKUP_RE.match(backup.name)
                if match is None or match["job"] in keep:
                    continue
                log.warning("settling the backup %s left by job %s", backup.name, match["job"])
                self.settle(kb_dir.name, kb_dir / match["name"], backup, match["job"])
            self.clean_retries(kb_dir.name)
