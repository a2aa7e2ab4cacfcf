"""The CLI's one way to print: text that comes from data (file names, skip reasons, answers,
sources) may hold control characters; an `ESC[2J` in a file name must not clear the screen. Every
control character (C0 but tab and newline, DEL, C1) and the bidirectional overrides are shown as
`\\uXXXX` escapes, which are also valid inside JSON strings; in names also the invisible format
characters (zero-width space, soft hyphen, BOM)."""

from __future__ import annotations

import re
from typing import Any

import typer

_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE_RE = re.compile(f"[{_UNSAFE}]")
# in names also the other invisible format characters (zero-width space, soft hyphen, BOM, tags; not the
# joiners U+200C/D): `report\u200b.pdf` must not pass for `report.pdf`
_INVISIBLE = "\u00ad\u180e\u200b\u2060-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb\U000e0001\U000e0020-\U000e007f"
_UNSAFE_NAME_RE = re.compile(f"[{_UNSAFE}{_INVISIBLE}\t\n]")  # a newline in a name is never meant


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # a surrogate pair, as JSON writes it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def term_safe(text: object, *, keep_newlines: bool = True) -> str:
    """`text` with control characters escaped; `keep_newlines=False` (names) escapes tab and
    newline too."""
    pattern = _UNSAFE_RE if keep_newlines else _UNSAFE_NAME_RE
    return pattern.sub(_escape, str(text))


def name(text: object) -> str:
    """A file name or source on one line."""
    return term_safe(text, keep_newlines=False)


def echo(message: Any = "", **kwargs: Any) -> None:
    """typer.echo with control characters escaped."""
    typer.echo(term_safe(message), **kwargs)
