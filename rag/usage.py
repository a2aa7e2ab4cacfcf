"""How a knowledge base is used: per day (UTC), the questions answered from it, the refusals among
them, and how many answers cited each document. The API records one answer at a time at its edge
(`/v1/query`, `/v1/chat`, `/v1/chat/completions`, when an answer is generated); the console reads the
last days back with the documents never cited.

Counts per (knowledge base, day) and per (knowledge base, day, document), incremented in place: the
tables grow with days and cited documents, not with questions. They live in the catalog's database
(its own schema component, `usage`) so never-cited documents are one query over `documents`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from rag.db import Database

MIGRATIONS = [
    (
        """CREATE TABLE IF NOT EXISTS usage_days (
            kb TEXT NOT NULL,
            day TEXT NOT NULL,
            questions BIGINT NOT NULL DEFAULT 0,
            refusals BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (kb, day)
        )""",
        """CREATE TABLE IF NOT EXISTS usage_citations (
            kb TEXT NOT NULL,
            day TEXT NOT NULL,
            doc_id TEXT NOT NULL,
            answers BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (kb, day, doc_id)
        )""",
        "CREATE INDEX IF NOT EXISTS usage_citations_doc ON usage_citations (kb, doc_id, day)",
    ),
]
TOP_CITED = 10


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class DayUsage:
    day: str
    questions: int = 0
    refusals: int = 0
    cited_documents: int = 0  # distinct documents cited that day


@dataclass(frozen=True)
class CitedDoc:
    doc_id: str
    source: str | None  # None: the document has been removed since
    answers: int = 0


@dataclass
class UsageReport:
    kb: str
    since: str
    days: list[DayUsage]
    top_cited: list[CitedDoc]
    never_cited: list[CitedDoc] = field(default_factory=list)  # indexed documents, by source; one page
    never_cited_total: int = 0


class UsageLog:
    """The usage counts, in the catalog's database (`Database`: the Catalog's own, `catalog.db`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.db.migrate("usage", MIGRATIONS)

    def record(self, kb: str, *, refused: bool, cited: Iterable[str], at: float | None = None) -> None:
        """One answer from `kb`: a question, a refusal or not, the documents it cited."""
        day = day_of(time.time() if at is None else at)
        with self.db.transaction() as db:
            db.execute("INSERT INTO usage_days (kb, day, questions, refusals) VALUES (?, ?, 1, ?) ON CONFLICT (kb, day) "
                       "DO UPDATE SET questions = usage_days.questions + 1, "
                       "refusals = usage_days.refusals + excluded.refusals", (kb, day, int(refused)))
            for doc_id in sorted(set(cited)):
                db.execute("INSERT INTO usage_citations (kb, day, doc_id, answers) VALUES (?, ?, ?, 1) "
                           "ON CONFLICT (kb, day, doc_id) DO UPDATE SET answers = usage_citations.answers + 1",
                           (kb, day, doc_id))

    def report(self, kb: str, days: int, *, now: float | None = None, limit: int = 50, offset: int = 0) -> UsageReport:
        """The last `days` days of `kb` (today included, every day listed), its most cited documents,
        and one page of its indexed documents no answer cited in those days."""
        today = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).date()
        listed = [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
        since = listed[0]
        with self.db.snapshot() as db:
            counts = {r["day"]: r for r in db.query("SELECT day, questions, refusals FROM usage_days WHERE kb=? "
                                                     "AND day>=?", (kb, since))}
            cited = {r["day"]: int(r["n"]) for r in db.query(
                "SELECT day, COUNT(*) AS n FROM usage_citations WHERE kb=? AND day>=? GROUP BY day", (kb, since))}
            top = db.query("SELECT c.doc_id, MAX(d.source) AS source, SUM(c.answers) AS answers FROM usage_citations c "
                           "LEFT JOIN documents d ON d.kb = c.kb AND d.doc_id = c.doc_id WHERE c.kb=? AND c.day>=? "
                           "GROUP BY c.doc_id ORDER BY answers DESC, c.doc_id LIMIT ?", (kb, since, TOP_CITED))
            never = ("FROM documents d WHERE d.kb=? AND d.state='indexed' AND NOT EXISTS (SELECT 1 FROM "
                     "usage_citations c WHERE c.kb = d.kb AND c.doc_id = d.doc_id AND c.day>=?)")
            total = db.one(f"SELECT COUNT(*) AS n {never}", (kb, since))
            page = db.query(f"SELECT d.doc_id, d.source {never} ORDER BY d.source, d.doc_id LIMIT ? OFFSET ?",
                            (kb, since, limit, offset))
        per_day = [DayUsage(day, int(counts[day]["questions"]) if day in counts else 0,
                            int(counts[day]["refusals"]) if day in counts else 0, cited.get(day, 0)) for day in listed]
        return UsageReport(kb, since, per_day, [CitedDoc(r["doc_id"], r["source"], int(r["answers"])) for r in top],
                           [CitedDoc(r["doc_id"], r["source"]) for r in page], int(total["n"]))

    def forget(self, kb: str) -> None:
        """Drop the counts of a knowledge base (it was dropped)."""
        with self.db.transaction() as db:
            db.execute("DELETE FROM usage_days WHERE kb=?", (kb,))
            db.execute("DELETE FROM usage_citations WHERE kb=?", (kb,))
