"""Decoding text files whose encoding is not declared: BOMs, UTF-8, GB18030 (a superset of
GBK/GB2312), UTF-16 without BOM, then charset-normalizer's best guess."""

from __future__ import annotations

import codecs
import logging

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


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Return `(text, encoding)`. `declared` (an HTML meta charset) is tried after the BOM
    and UTF-16 checks. Raises ParseError when no encoding fits."""
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
