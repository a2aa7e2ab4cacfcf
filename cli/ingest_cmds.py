"""`rag ingest`, `rag docs`, `rag rm`, `rag kbs`, `rag check`, `rag index`, `rag reindex`, `rag drop`."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import typer

from cli.main import app, fail, handle_errors
from cli.output import echo, name
from ingest.runner import IngestProgress
from ingest.service import build_ingestor
from rag import versions
from rag.chunk_edits import KEEP, check_mode
from rag.errors import StoreHeld
from rag.factory import build_services, open_services
from rag.settings import load_settings
from rag.types import parse_tags


class _Progress:
    """A tqdm bar over files, with chunks embedded of chunks known so far and chunks/s in its
    postfix: it moves after every embedding sub-batch, also while one large file embeds."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="file", dynamic_ncols=True, file=__import__("sys").stderr)
        self.started = time.perf_counter()
        self.done = 0

    def __call__(self, step: IngestProgress) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        self.bar.update(max(step.files_done - self.done, 0))
        self.done = step.files_done
        self.bar.set_postfix_str(self.postfix(step, elapsed))

    @staticmethod
    def postfix(step: IngestProgress, elapsed: float) -> str:
        return (f"chunks {step.chunks_embedded}/{step.chunks_known} embedded  "
                f"{step.chunks_embedded / max(elapsed, 1e-6):.1f} chunks/s  {name(step.source[-40:])}")

    def page(self, source: str, page: int, pages: int) -> None:
        """A long scan shows its OCR progress page by page."""
        self.bar.set_postfix_str(f"OCR page {page}/{pages}  {name(source[-40:])}")

    def close(self) -> None:
        self.bar.close()


@app.command()
@handle_errors
def ingest(
    path: Path = typer.Argument(..., help="A folder (synced: new, changed and removed files) or a single file."),
    kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB",
                           help="Knowledge base name (default: RAG_DEFAULT_KB, else 'default')."),
    chunker: str = typer.Option(None, "--chunker", help="recursive | semantic | qa (= recursive: Q&A rows are "
                                "one chunk each with any chunker) (default: the knowledge base's setting, else "
                                "RAG_CHUNKER, recursive)."),
    chunk_size: int = typer.Option(None, "--chunk-size", help="Characters per chunk (default: the knowledge "
                                   "base's setting, else RAG_CHUNK_SIZE)."),
    chunk_overlap: int = typer.Option(None, "--chunk-overlap", help="Characters of overlap (default: the "
                                      "knowledge base's setting, else RAG_CHUNK_OVERLAP)."),
    percentile: float = typer.Option(None, "--semantic-percentile", help="Semantic split threshold percentile."),
    generate_questions: int = typer.Option(None, "--generate-questions", help="LLM questions per chunk (0 = off)."),
    tag: list[str] = typer.Option([], "--tag", help="key=value tag on every chunk (repeatable), added to the "
                                  "knowledge base's tags for new files."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Remove documents whose file left the folder."),
    follow_links: bool = typer.Option(False, "--follow-links",
                                      help="Also index symbolic links that point outside the folder."),
    ocr: bool = typer.Option(None, "--ocr/--no-ocr", help="OCR scanned PDF pages and images (default: the knowledge "
                             "base's setting, else RAG_OCR, auto)."),
    edits: str = typer.Option(KEEP, "--edits", help="What a changed file's re-ingest does with its chunk edits "
                              "(text, disabled, added chunks, keywords): keep (re-apply those whose chunk is still "
                              "there) or drop."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Index a folder of documents (incremental: unchanged files are not re-embedded).

    Exit code 0 when every file is indexed (or unchanged), 3 when some files were skipped or indexed in
    part and the others indexed (the summary lists them), 1 when nothing could be ingested, 2 for bad
    arguments, 75 when another job is writing the knowledge base."""
    if not path.exists():
        fail(f"path does not exist: {path}", 2)
    check_mode(edits, "--edits")
    settings = load_settings(semantic_percentile=percentile, generate_questions=generate_questions)
    # the flags win over the knowledge base's own settings, which win over RAG_CHUNKER & co (rag/kb_settings.py)
    overrides = {"chunker": chunker, "chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "ocr": ocr}
    services = build_services(settings)
    kb = kb or settings.default_kb
    tags = parse_tags(tag, field="--tag")
    echo(f"embedding model: {services.embedder_resolution.reason}", err=True)
    files = None if path.is_dir() else [path]  # a single file (a pipe or device is skipped with its reason)
    progress = None
    try:
        with services.kbs.writing(kb):  # taken before the knowledge base may be created
            progress = None if quiet or as_json else _Progress(
                total=len(files) if files else _count_files(path, follow_links))
            ingestor = build_ingestor(services, kb, tags=tags, progress=progress,
                                      page_progress=progress.page if progress else None, overrides=overrides,
                                      edits=edits, overrides_by="--no-ocr")
            report = (ingestor.ingest_files(path.parent, files) if files
                      else ingestor.ingest_folder(path, prune=prune, follow_links=follow_links))
            # version families are detected now (and again whenever the documents change)
            knowledge = services.kbs.open(kb)
            families = {v.family for v in versions.families(knowledge, settings.version_min_overlap).values()}
            graph = _index(knowledge, settings.hnsw_build_min_unindexed)
    finally:
        if progress:
            progress.close()
        services.close()
    if as_json:
        echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_summary(report)
        if families:
            echo(f"version families: {len(families)} (see `rag docs --kb {name(kb)}`)")
        if graph is not None:
            echo(f"vector search graph (HNSW) built in {graph:.1f}s")
    nothing = report.count("indexed", "updated", "unchanged", "removed") == 0
    if nothing:
        fail(f"nothing could be ingested from {path}", 1)
    partial = len(report.skipped) + sum(1 for f in report.files if f.status in ("indexed", "updated") and f.reason)
    if partial:  # a distinct code, so a script notices the files left out
        fail(f"{partial} file(s) skipped or indexed in part (listed above); the others are indexed", 3)


def _index(knowledge, min_unindexed: int) -> float | None:
    """Build the HNSW graph when at least `min_unindexed` vectors are outside it (0: never);
    the seconds it took, or None when nothing was built."""
    if min_unindexed <= 0:
        return None
    started = time.perf_counter()
    return time.perf_counter() - started if knowledge.index_vectors(min_unindexed) else None


def _count_files(path: Path, follow_links: bool) -> int:
    from ingest.runner import scan_folder

    return len(scan_folder(path, follow_links).files)


def _print_summary(report) -> None:
    indexed = report.count("indexed", "updated")
    unchanged = report.count("unchanged")
    echo(f"knowledge base: {report.kb}   model: {report.model}")
    echo(f"files indexed: {indexed}   unchanged: {unchanged}   removed: {report.count('removed')}   "
               f"skipped: {len(report.skipped)}")
    echo(f"chunks added: {report.chunks_added}   removed: {report.chunks_removed}   "
         f"time: {report.seconds:.1f}s (embedding {report.embed_seconds:.1f}s"
         + (f", OCR {report.ocr_seconds:.1f}s)" if report.ocr_seconds else ")"))
    if indexed == 0 and report.count("removed") == 0 and unchanged:
        echo("nothing changed: no file needed embedding")
    for f in report.files:
        if f.status == "removed":
            echo(f"  removed  {name(f.source)}: {name(f.reason)}")
    for f in report.files:
        if f.status in ("indexed", "updated") and f.reason:
            echo(f"  partial  {name(f.source)}: {name(f.reason)}")
    for f in report.skipped:
        echo(f"  skipped  {name(f.source)}: {name(f.reason)}")
    for f in report.files:
        if f.note:
            echo(f"  note     {name(f.source)}: {name(f.note)}")


@app.command()
@handle_errors
def docs(kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """List the documents of a knowledge base."""
    with open_services() as services:
        kb = kb or services.settings.default_kb
        services.catalog.require_kb(kb)
        families = versions.families(services.kbs.open(kb), services.settings.version_min_overlap)
        rows = [{"doc_id": d.doc_id, "source": d.source, "chunks": len(d.chunk_ids), "bytes": d.size,
                 "state": d.state, "tags": d.tags,
                 "ingested_at": datetime.fromtimestamp(d.ingested_at).isoformat(timespec="seconds"),
                 **_version_fields(families.get(d.doc_id))}
                for d in services.catalog.list_docs(kb)]
    if as_json:
        echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    tags = {r["doc_id"]: ",".join(f"{k}={v}" for k, v in sorted(r["tags"].items())) or "-" for r in rows}
    width = max([len("tags"), *(len(t) for t in tags.values())])
    echo(f"{'chunks':>7} {'bytes':>10}  {'ingested at':19}  {'tags':{width}}  source")
    for r in rows:
        flag = "" if r["state"] == "indexed" else f"  [{r['state']}]"
        echo(f"{r['chunks']:>7} {r['bytes']:>10}  {r['ingested_at']:19}  {name(tags[r['doc_id']]):{width}}  "
             f"{name(r['source'])}{flag}")
    echo(f"{len(rows)} document(s)")
    by_family: dict[str, list[versions.Version]] = {}
    for v in families.values():
        by_family.setdefault(v.family, []).append(v)
    if by_family:
        echo(f"\n{len(by_family)} version family(ies) (queries use the newest unless a question names another):")
    for family, members in sorted(by_family.items(), key=lambda f: f[1][0].source):
        chain = " < ".join(name(v.source) for v in sorted(members, key=lambda v: v.order))
        echo(f"  {name(family)}: {chain}")


def _version_fields(v: versions.Version | None) -> dict:
    if v is None:
        return {"version_of": None, "version_order": None, "latest_version": None}
    return {"version_of": v.family, "version_order": v.order, "version_label": v.label, "latest_version": v.newest}


@app.command()
@handle_errors
def rm(path: str = typer.Argument(..., help="The document's source path as `rag docs` shows it."),
       kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB")) -> None:
    """Remove one document from a knowledge base."""
    with open_services() as services:
        kb = kb or services.settings.default_kb
        services.catalog.require_kb(kb)  # never creates the knowledge base
        doc, chunks_removed = services.kbs.remove(kb, path)  # under the write lock: Busy before any store is opened
        echo(f"removed {name(doc.source)} ({chunks_removed} chunks)")


@app.command()
@handle_errors
def kbs(as_json: bool = typer.Option(False, "--json")) -> None:
    """List knowledge bases."""
    with open_services() as services:
        rows = [{"name": r.name, "embed_model": r.embed_model, "dim": r.dim, "collection": r.collection,
                 **services.catalog.kb_stats(r.name)} for r in services.catalog.list_kbs()]
        if as_json:
            echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        for r in rows:
            echo(f"{r['name']}: {r['documents']} documents, {r['chunks']} chunks, model {r['embed_model']} "
                       f"(dim {r['dim']})")
        if not rows:
            echo("no knowledge bases yet: run `rag ingest ./docs --kb NAME`")


@app.command()
@handle_errors
def check(kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB"),
          repair: bool = typer.Option(False, "--repair", help="Bring the catalog, the vectors and BM25 back "
                                      "to agreement (under the write lock), say what was done, check again.")) -> None:
    """Verify that the catalog, the vector store and BM25 hold the same chunk ids, and that no
    orphan collection or half-dropped knowledge base is left; `--repair` fixes what it finds."""
    from rag.repair import repair as repair_kb

    with open_services() as services:
        kb = kb or services.settings.default_kb
        try:
            if repair:
                done = repair_kb(services.kbs, kb)  # under the write lock: Busy before any store is opened
                _print_repair(done)
                report = done.after
            else:
                report = services.kbs.check(kb)
        except StoreHeld:
            fail(_served_hint(kb, repair), 1)
        _print_check(report)
        if not report.ok:
            fail("knowledge base is inconsistent: run `rag check --repair` to repair it", 1)
        echo("ok: stores agree")


def _served_hint(kb: str, repair: bool) -> str:
    host = os.environ.get("RAG_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{os.environ.get('RAG_PORT', '8000')}/v1/kbs/{kb}/{'repair' if repair else 'check'}"
    method = "-X POST " if repair else ""
    return (f"the server holds this store (`rag serve` is running); use: "
            f'curl {method}-H "Authorization: Bearer $KEY" {url}')


def _print_check(report) -> None:
    echo(f"catalog {report.catalog} chunks, vectors {report.vectors}, bm25 {report.lexical}")
    for label in ("missing_in_vectors", "missing_in_lexical", "extra_in_vectors", "extra_in_lexical",
                  "pending_documents", "orphan_collections", "orphan_lexical", "half_dropped"):
        values = getattr(report, label)
        if values:
            echo(f"  {label}: {len(values)} (e.g. {', '.join(name(v) for v in values[:3])})")


def _print_repair(done) -> None:
    if done.recovery is not None:
        echo(f"repair: vector store {done.recovery.message}")
    lines = [("finished interrupted drops", done.finished_drops), ("rolled back to their indexed version",
             done.rolled_back), ("removed unfinished new documents", done.removed_pending),
             ("finished removals", done.finished_removals), ("dropped orphans", done.orphans_dropped)]
    for label, values in lines:
        if values:
            echo(f"repair: {label}: {len(values)}: {', '.join(name(v) for v in values)}")
    for label, count in (("deleted old chunks of replaced documents", done.garbage_deleted),
                         ("deleted chunks the catalog does not list", done.extra_deleted),
                         ("re-indexed in BM25 from the stored chunks", done.lexical_restored)):
        if count:
            echo(f"repair: {label}: {count}")
    if done.removed_missing:
        echo(f"repair: removed {len(done.removed_missing)} document(s) whose vectors were lost; "
             f"ingest them again: {', '.join(name(v) for v in done.removed_missing)}")
    if not done.changed:
        echo("repair: nothing to repair")


@app.command("index")
@handle_errors
def index_cmd(kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB")) -> None:
    """Build the vector search graph (HNSW) of a knowledge base now (`rag ingest` does it past
    RAG_HNSW_BUILD_MIN_UNINDEXED vectors outside it; the embedded store has no background optimiser)."""
    with open_services() as services:
        kb = kb or services.settings.default_kb
        services.catalog.require_kb(kb)
        with services.kbs.writing(kb):
            seconds = _index(services.kbs.open(kb), 1)
        echo("vector search graph (HNSW) up to date" if seconds is None
             else f"vector search graph (HNSW) built in {seconds:.1f}s")


@app.command("reindex")
@handle_errors
def reindex_cmd(kb: str = typer.Option(None, "--kb", envvar="RAG_DEFAULT_KB")) -> None:
    """Re-embed a knowledge base with the configured model into a new collection, then switch to it."""
    with open_services() as services:
        echo(f"embedding model: {services.embedder_resolution.reason}", err=True)
        kb = kb or services.settings.default_kb
        services.catalog.require_kb(kb)
        n, collection = services.kbs.reindex(kb)  # under the write lock: Busy before any store is opened
        echo(f"re-embedded {n} chunks into collection {collection}")


@app.command()
@handle_errors
def drop(kb: str = typer.Option(..., "--kb"), yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Delete a knowledge base and its indexes (and finish a drop that was interrupted)."""
    with open_services() as services:
        interrupted = services.catalog.get_kb(kb) is None and services.catalog.get_dropping(kb) is not None
        if not interrupted:
            services.catalog.require_kb(kb)  # an unknown name fails before the question
        if not yes and not interrupted:
            typer.confirm(f"delete knowledge base {kb!r} and all its indexes?", abort=True)
        finished = services.kbs.drop(kb)  # under the write lock: Busy before any store is opened
        echo(f"dropped {name(kb)}" + (" (finished an interrupted drop)" if finished else ""))
