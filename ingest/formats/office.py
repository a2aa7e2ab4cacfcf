"""Office files that are not Office Open XML. A .xlsx or .docx protected by a password to open
is not a zip at all but an OLE compound file holding "EncryptionInfo" and "EncryptedPackage"
streams; a legacy .xls or .doc renamed to the new extension is an OLE file without them. Both
get a reason a user can act on instead of "File is not a zip file"."""

from __future__ import annotations

import io

from rag.errors import ParseError

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_STREAMS = ("EncryptionInfo", "EncryptedPackage")
_LEGACY = {"xlsx": ("Excel", ".xls"), "docx": ("Word", ".doc")}


def refuse_ole(data: bytes, fmt: str) -> None:
    """Raise `ParseError` when `data` (a file named .xlsx/.docx) is an OLE compound file."""
    if not data.startswith(OLE_MAGIC):
        return
    import olefile

    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            encrypted = any(ole.exists(name) for name in _ENCRYPTED_STREAMS)
    except OSError as exc:  # olefile raises OSError for a damaged compound file
        raise ParseError(f"corrupt {fmt.upper()}: a damaged OLE compound file ({exc})") from exc
    if encrypted:
        raise ParseError("encrypted: the file needs a password (remove the password to open it, then ingest again)")
    app, old_suffix = _LEGACY.get(fmt, ("Office", "binary Office"))
    raise ParseError(f"legacy binary {app} format ({old_suffix}) under a .{fmt} name: open it and save as .{fmt}")
