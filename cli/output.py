"""The CLI's one way to print: text that comes from data (file names, skip reasons, answers,
sources) may hold control characters; an `ESC[2J` in a file name must not clear the screen. Every
control character (C0 but tab and newline, DEL, C1) and the bidirectional overrides are shown as
`\\uXXXX` escapes, which are also valid inside JSON strings."""

from __future__ import annotations

import re
from typing import Any

import typer

_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE_RE = re.compile(f"[{_UNSAFE}]")
_UNSAFE_NAME_RE = re.compile(f"[{_UNSAFE}\t\n]")  # a newline in a name is never meant


def term_safe(text: object, *, keep_newlines: bool = True) -> str:
    """`text` with control characters escaped; `keep_newlines=False` (names) escapes tab and
    newline too."""
    pattern = _UNSAFE_RE if keep_newlines else _UNSAFE_NAME_RE
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def name(text: object) -> str:
    """A file name or source on one line."""
    return term_safe(text, keep_newlines=False)


def echo(message: Any = "", **kwargs: Any) -> None:
    """typer.echo with control characters escaped."""
    typer.echo(term_safe(message), **kwargs)
