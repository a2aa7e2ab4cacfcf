"""`rag` command line: thin commands that call into rag/, ingest/, api/ and eval/.

Errors the service raises on purpose print one line and exit 2 (bad arguments), 75 (the knowledge
base is being written by another job, or a model server is unreachable: retry later, EX_TEMPFAIL) or 1."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from cli.output import echo
from rag.errors import Busy, ConfigError, InvalidRequest, ModelUnavailable, NotFound, RagError, StoreHeld

app = typer.Typer(help="Self-hosted RAG question answering over your documents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def fail(message: str, code: int = 1) -> None:
    echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Translate RagError into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, InvalidRequest, NotFound) as exc:
            fail(exc.message, 2)
        except (Busy, ModelUnavailable) as exc:
            fail(exc.message, 75)
        except StoreHeld as exc:
            fail(f"{exc.message}: a running `rag serve` holds this store; use its API (or stop it)", 75)
        except RagError as exc:
            fail(exc.message, 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("RAG_LOG_LEVEL", "WARNING").upper(),
                                                  logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "jieba", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


def _register() -> None:
    from cli import ingest_cmds  # noqa: F401  (commands register themselves on `app`)

    for optional in ("cli.query_cmds", "cli.serve_cmd", "cli.catalog_cmd", "cli.eval_cmds"):
        try:
            __import__(optional)
        except ModuleNotFoundError as exc:
            if exc.name != optional:
                raise


if __name__ == "__main__":  # `python -m cli.main`: run the `cli.main` module the commands register on
    from cli.main import app as _app

    _app()
else:
    _register()
