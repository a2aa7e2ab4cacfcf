"""Decoding text files whose encoding is not declared: BOMs, UTF-8, UTF-8 with a few invalid bytes
replaced, GB18030 (a superset of GBK/GB2312), UTF-16 without BOM, then charset-normalizer's best
guess."""

from __future__ import annotations

import codecs
import logging
import re
from typing import NamedTuple

from rag.errors import ParseError

log = logging.getLogger(__name__)

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_PREFERRED_ON_TIE = ("cp1252", "iso8859_1", "iso8859_15")
# mostly-UTF-8 text: at most this share of its bytes invalid, and more valid non-ASCII characters
# than invalid bytes (real UTF-8 evidence; an ASCII file with a stray cp1252 byte is guessed)
MAX_INVALID_UTF8_RATIO = 0.01
_ESCAPED_RE = re.compile("[\udc80-\udcff]")
_NON_ASCII_RE = re.compile("[^\x00-\x7f\udc80-\udcff]")


class Decoded(NamedTuple):
    text: str
    encoding: str
    replaced: int = 0  # invalid bytes replaced by U+FFFD


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Return `(text, encoding)`; see `decode_text`."""
    decoded = decode_text(data, declared)
    return decoded.text, decoded.encoding


def decode_text(data: bytes, declared: str | None = None) -> Decoded:
    """`declared` (an HTML meta charset) is tried after the BOM and UTF-16 checks. Raises
    ParseError when no encoding fits."""
    if data.isascii() or not _has_invalid_utf8(data):
        return Decoded(*_decode(data, declared))
    return _decode_damaged(data, declared)


def _has_invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _decode_damaged(data: bytes, declared: str | None) -> Decoded:
    """Not valid UTF-8: BOMs, UTF-16 and a working declared charset win; then UTF-8 with
    replacement when the damage is small; then the other detectors."""
    lenient = data.decode("utf-8", errors="surrogateescape")
    invalid = len(_ESCAPED_RE.findall(lenient))
    mostly_utf8 = (invalid <= MAX_INVALID_UTF8_RATIO * len(data)
                   and len(_NON_ASCII_RE.findall(lenient)) >= invalid)
    if not mostly_utf8 or any(data.startswith(bom) for bom, _ in _BOMS) or _utf16_without_bom(data):
        try:
            return Decoded(*_decode(data, declared))
        except ParseError:
            if invalid > MAX_INVALID_UTF8_RATIO * len(data):
                raise
    elif declared and _decodes(data, declared) and codecs.lookup(declared).name != "utf-8":
        return Decoded(data.decode(declared), codecs.lookup(declared).name)
    log.info("decoded as UTF-8 with %d invalid byte(s) replaced", invalid)
    return Decoded(_ESCAPED_RE.sub("\ufffd", lenient), "utf-8", invalid)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return False
    return True


def _decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(name.replace("-sig", "")), name
            except UnicodeDecodeError as exc:
                raise ParseError(f"undecodable text: bytes start with a {name} BOM but are invalid ({exc.reason})") from exc
    utf16 = _utf16_without_bom(data)
    if utf16 is not None:
        return utf16
    if declared:
        try:
            return data.decode(declared), codecs.lookup(declared).name
        except (LookupError, UnicodeDecodeError):
            log.info("declared charset %r does not decode the file; detecting", declared)
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        pass
    else:
        if _plausible_chinese(text):
            return text, "gb18030"
    return _guess(data)


def _plausible_chinese(text: str) -> bool:
    """GB18030 decodes most byte strings; real Chinese text is nearly all GB2312 (common)
    characters, while Latin-1/cp1252 bytes decoded as GB18030 give rare ones."""
    others = {ch for ch in text if ord(ch) > 0x7F}
    common = 0
    for ch in others:
        try:
            ch.encode("gb2312")
            common += 1
        except UnicodeEncodeError:
            pass
    return not others or common >= 0.8 * len(others)


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """ASCII-heavy UTF-16 text has a NUL in every other byte."""
    if len(data) < 4 or b"\x00" not in data[:200]:
        return None
    sample = data[:2000]
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) / 2
    name = "utf-16-le" if odd_nuls > 0.3 * half and even_nuls < 0.05 * half else (
        "utf-16-be" if even_nuls > 0.3 * half and odd_nuls < 0.05 * half else None)
    if name is None:
        return None
    try:
        return data.decode(name), name
    except UnicodeDecodeError:
        return None


def _guess(data: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes  # small, but only needed for odd files

    results = list(from_bytes(data))
    best = results[0] if results else None
    if best is not None:  # equally good guesses (cp1250/cp1252/cp1257 often tie): take the commonest
        tied = [m for m in results if m.chaos == best.chaos and m.coherence == best.coherence]
        best = next((m for name in _PREFERRED_ON_TIE for m in tied if m.encoding == name), best)
    if best is None or best.encoding is None:
        raise ParseError("undecodable text: not UTF-8, UTF-16 or GB18030 and no other encoding fits")
    name = codecs.lookup(best.encoding).name  # "utf_16_le" -> "utf-16-le"
    log.info("guessed text encoding %s", name)
    return str(best), name
