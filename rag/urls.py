"""Database URLs: which ones name PostgreSQL, and how one is shown without its password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme in POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """`url` without its password, for messages and logs (also a `password=` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join("password=***" if p.lower().startswith("password=") else p for p in parts.query.split("&")
                     ) if parts.query else parts.query
    return urlunsplit(parts._replace(netloc=netloc, query=query))
