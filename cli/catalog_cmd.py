"""`rag catalog copy --to postgresql://...`: move the SQLite catalog of a single host (knowledge
bases, documents, version families, API keys, conversations, jobs) into the PostgreSQL database that
replicas share (`RAG_CATALOG_URL`). Run it with the server stopped, then set RAG_CATALOG_URL."""

from __future__ import annotations

import typer

from cli.main import app, fail, handle_errors
from cli.output import echo
from rag.settings import load_settings
from rag.redact import is_postgres_url, redact_url

catalog_app = typer.Typer(help="The catalog database (SQLite files, or PostgreSQL with RAG_CATALOG_URL).",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


def _parts():
    """(SQLite file stem, its components' migrations, its tables), for every store of the catalog."""
    from api import auth, conversations, jobs
    from rag import catalog, usage, versions

    return [("catalog", [("catalog", catalog.MIGRATIONS), ("versions", versions.MIGRATIONS),
                         ("usage", usage.MIGRATIONS)],
             ["kbs", "documents", "document_tags", "chunk_edits", "generations", "doc_versions", "doc_version_state",
              "usage_days", "usage_citations"]),
            ("api_keys", [("api_keys", auth.MIGRATIONS)], ["api_keys"]),
            ("conversations", [("conversations", conversations.MIGRATIONS)], ["conversations", "messages"]),
            ("jobs", [("jobs", jobs.MIGRATIONS)], ["jobs"])]


@catalog_app.command("copy")
@handle_errors
def catalog_copy(
    to: str = typer.Option(..., "--to", help="The PostgreSQL URL to copy into (an empty database: "
                           "postgresql://user:password@host:5432/rag)."),
) -> None:
    """Copy the SQLite catalog of RAG_DATA_DIR into an empty PostgreSQL database, in one transaction
    per file; the SQLite files are left as they are. The vector store and BM25 indexes stay where
    they are (docs/scaling.md)."""
    from rag.db import Database, copy_rows

    if not is_postgres_url(to):
        fail("--to: give a postgresql:// URL", 2)
    data_dir = load_settings().data_dir
    target = Database(to)
    for stem, components, tables in _parts():
        path = data_dir / f"{stem}.sqlite"
        for component, steps in components:
            target.migrate(component, steps)
        if not path.exists():
            echo(f"{stem}: no {path.name} in {data_dir}, nothing to copy")
            continue
        source = Database(path)
        for component, steps in components:
            source.migrate(component, steps)
        counts = copy_rows(source, target, tables)
        source.close()
        echo(f"{stem}: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    target.close()
    echo(f"copied into {redact_url(to)}; set RAG_CATALOG_URL to it and start the server")
