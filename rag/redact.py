"""Connection URLs may carry a password (`postgresql://user:pw@host/db`): every message, log line
and report shows them through `redact_url`, and error texts that might quote one through `scrub`.
`is_postgres_url` tells a PostgreSQL URL from a SQLite path."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme in POSTGRES_SCHEMES


def _passwords(url: str) -> list[str]:
    """The passwords `url` carries: in its user info and in a `password=` query parameter."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    return found + [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]


def redact_url(url: str) -> str:
    """`url` with its password (user info or `password=` parameter) replaced by ***; anything
    unparsable is masked whole."""
    try:
        parts = urlsplit(url)
        if not _passwords(url):
            return url
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = urlencode([(k, MASK if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)], safe="*")
    if not netloc:  # `postgresql:///db?...`: urlunsplit would drop the empty authority
        return url.split("?", 1)[0] + "?" + query + (f"#{parts.fragment}" if parts.fragment else "")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(text: str, url: str | None) -> str:
    """`text` with the password of `url` (and the whole URL) replaced by their redacted forms."""
    if not url:
        return text
    text = text.replace(url, redact_url(url))
    try:
        passwords = _passwords(url)
    except ValueError:
        return text
    for password in passwords:
        text = text.replace(password, MASK)
    return text
