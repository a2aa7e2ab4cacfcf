"""`rag serve` (the REST API with uvicorn) and `rag keys create|list|revoke` (API keys, stored
hashed in the data dir; the way to make keys when no RAG_API_ADMIN_KEY is set)."""

from __future__ import annotations

import json

import typer

from cli.main import app, fail, handle_errors
from cli.output import echo
from rag.settings import load_settings

keys_app = typer.Typer(help="Manage API keys for the REST API (stored as SHA-256 hashes).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", envvar="RAG_HOST", help="Interface to listen on "
                             "(0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", envvar="RAG_PORT", help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (each loads its own models)."),
    log_level: str = typer.Option("info", "--log-level", help="critical | error | warning | info | debug."),
) -> None:
    """Start the REST API: /v1/query, /v1/chat, OpenAI-compatible /v1/chat/completions, knowledge base
    management, /docs (OpenAPI), /metrics and a chat page at /."""
    import uvicorn

    settings = load_settings()  # bad settings fail here, with the value in the message
    echo(f"serving on http://{host}:{port}  (data: {settings.data_dir}, docs: http://{host}:{port}/docs)",
               err=True)
    if workers > 1:
        if settings.resolved_vector_backend not in ("server", "pgvector"):  # an embedded store is one process's
            fail(f"--workers {workers} needs a Qdrant server (RAG_QDRANT_URL) or pgvector (RAG_VECTOR_BACKEND="
                 f"pgvector): the embedded vector store ({settings.resolved_vector_backend}) is opened by one "
                 f"process only", 2)
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level=log_level)
        return
    from api.app import create_app

    uvicorn.run(create_app(settings=settings), host=host, port=port, log_level=log_level)


def _store():
    from api.auth import ApiKeyStore
    from rag.factory import Services

    return ApiKeyStore(Services(load_settings()).database("api_keys"))


@keys_app.command("create")
@handle_errors
def keys_create(
    name: str = typer.Argument(..., help="Who or what uses the key."),
    read: list[str] = typer.Option([], "--read", "-r", help="Knowledge base it may query; '*' = all (repeatable)."),
    write: list[str] = typer.Option([], "--write", "-w", help="Knowledge base it may change (implies read; "
                                    "repeatable)."),
) -> None:
    """Create a key and print it once (only its hash is kept)."""
    store = _store()
    try:
        record = store.create(name, read, write)
    finally:
        store.close()
    echo(f"{record.secret}\n(id {record.id}; read {record.read or '-'}; write {record.write or '-'}; "
               "store it now: it cannot be shown again)")


@keys_app.command("list")
@handle_errors
def keys_list(as_json: bool = typer.Option(False, "--json", help="JSON output.")) -> None:
    store = _store()
    try:
        records = store.list()
    finally:
        store.close()
    if as_json:
        echo(json.dumps([{k: v for k, v in r.__dict__.items() if k != "secret"} for r in records], indent=2))
        return
    for r in records:
        echo(f"{r.id}  {r.prefix}…  {r.name}  read={','.join(r.read) or '-'}  write={','.join(r.write) or '-'}")


@keys_app.command("revoke")
@handle_errors
def keys_revoke(key_id: str = typer.Argument(..., help="The key id (see `rag keys list`).")) -> None:
    store = _store()
    try:
        store.revoke(key_id)
    finally:
        store.close()
    echo(f"revoked {key_id}")
