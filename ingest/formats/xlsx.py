"""A streaming XLSX reader: the sheet XML is read row by row with lxml's iterparse, and every
row's element is dropped once read, so time and memory grow linearly with the sheet. (openpyxl's
read-only mode first walks a whole sheet without a <dimension> just to size it, holds every read
row element until the end, and pads each row to the declared dimension: a 5.7 MB workbook whose
sheet unpacks to 190 MB ran for minutes.) openpyxl still supplies the date-format rules."""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from ingest.limits import ParseBudget

_REL_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_OFFICE_DOCUMENT = "/officeDocument"
_WORKSHEET = "/worksheet"
_SHARED_STRINGS = "/sharedStrings"
_STYLES = "/styles"


@dataclass(frozen=True)
class SheetRef:
    title: str
    member: str  # path of the sheet's XML inside the zip


@dataclass
class Workbook:
    archive: zipfile.ZipFile
    sheets: list[SheetRef]
    strings: list[str]
    date_styles: frozenset[int]  # cell style indexes whose number format is a date
    epoch_1904: bool


def open_workbook(archive: zipfile.ZipFile, budget: ParseBudget) -> Workbook:
    """Sheets (worksheets only, in workbook order), shared strings and date styles. Raises
    KeyError for a missing part and lxml's XMLSyntaxError for broken XML."""
    book = _target(archive, "", _OFFICE_DOCUMENT)
    if book is None:
        raise KeyError("no workbook part")
    rels = _relationships(archive, book)
    root = _parse(archive, book)
    epoch_1904 = any(_local(e.tag) == "workbookPr" and e.get("date1904") in ("1", "true") for e in root)
    sheets = []
    for element in root.iter():
        if _local(element.tag) == "sheet":
            target, kind = rels.get(element.get(_REL_ID) or "", ("", ""))
            if kind.endswith(_WORKSHEET) and target in archive.NameToInfo:
                sheets.append(SheetRef(element.get("name") or f"Sheet{len(sheets) + 1}", target))
    strings_part = next((t for t, k in rels.values() if k.endswith(_SHARED_STRINGS)), None)
    styles_part = next((t for t, k in rels.values() if k.endswith(_STYLES)), None)
    strings = _shared_strings(archive, strings_part, budget) if strings_part in archive.NameToInfo else []
    styles = _date_styles(archive, styles_part) if styles_part in archive.NameToInfo else frozenset()
    return Workbook(archive, sheets, strings, styles, epoch_1904)


def iter_rows(book: Workbook, sheet: SheetRef, budget: ParseBudget) -> Iterator[list[Any]]:
    """The cell values of each row that has cells (str, int, float, bool, datetime or None),
    placed by their column reference; each row is charged to `budget` as it is read."""
    with book.archive.open(sheet.member) as source:
        for row in _elements(source, "row"):
            values: list[Any] = []
            for cell in row:
                if _local(cell.tag) != "c":
                    continue
                column = _column(cell.get("r"), len(values))
                if column > len(values):
                    values.extend([None] * (column - len(values)))
                values.append(_value(book, cell))
            budget.row(len(values))
            if values:
                yield values


def _value(book: Workbook, cell: Any) -> Any:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        return "".join(_texts(next((c for c in cell if _local(c.tag) == "is"), ())))
    raw = next((c.text for c in cell if _local(c.tag) == "v"), None)
    if raw is None:
        return None
    if kind == "s":
        index = int(raw)
        return book.strings[index] if 0 <= index < len(book.strings) else None
    if kind == "b":
        return raw.strip() in ("1", "true")
    if kind != "n":  # str (formula text), e (error such as #N/A), d (ISO date)
        return raw
    number: int | float = int(raw) if raw.lstrip("-").isdigit() else float(raw)
    style = int(cell.get("s") or 0)
    if style in book.date_styles:
        from openpyxl.utils.datetime import from_excel

        try:
            return from_excel(number, _epoch(book.epoch_1904))
        except (OverflowError, ValueError):
            return raw
    return number


def _epoch(epoch_1904: bool) -> Any:
    from openpyxl.utils.datetime import CALENDAR_MAC_1904, CALENDAR_WINDOWS_1900

    return CALENDAR_MAC_1904 if epoch_1904 else CALENDAR_WINDOWS_1900


def _column(ref: str | None, position: int) -> int:
    """0-based column of a cell reference like "AB12"; cells without one follow the previous."""
    if not ref:
        return position
    number = 0
    for char in ref:
        if not char.isalpha():
            break
        number = number * 26 + (ord(char.upper()) - 64)
    return max(number - 1, 0) if number else position


def _shared_strings(archive: zipfile.ZipFile, member: str, budget: ParseBudget) -> list[str]:
    strings = []
    with archive.open(member) as source:
        for item in _elements(source, "si"):
            strings.append("".join(_texts(item)).replace("x005F_", ""))
            if len(strings) % 4096 == 0:
                budget.tick()
    return strings


def _texts(item: Any) -> Iterator[str]:
    """The text of a string item: its <t>, or the <t> of each rich-text run (phonetic runs skipped)."""
    for child in item:
        name = _local(child.tag)
        if name == "t":
            yield child.text or ""
        elif name == "r":
            yield from (t.text or "" for t in child if _local(t.tag) == "t")


def _date_styles(archive: zipfile.ZipFile, member: str) -> frozenset[int]:
    from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format

    root = _parse(archive, member)
    custom = {int(e.get("numFmtId", -1)): e.get("formatCode", "") for e in root.iter() if _local(e.tag) == "numFmt"}
    xfs = next((e for e in root if _local(e.tag) == "cellXfs"), ())
    dates = set()
    for index, xf in enumerate(x for x in xfs if _local(x.tag) == "xf"):
        number_format = int(xf.get("numFmtId") or 0)
        code = custom.get(number_format, BUILTIN_FORMATS.get(number_format, ""))
        if code and is_date_format(code):
            dates.add(index)
    return frozenset(dates)


def _relationships(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """rId -> (target member, relationship type) of a part."""
    folder, name = posixpath.split(part)
    rels_member = posixpath.join(folder, "_rels", f"{name}.rels")
    if rels_member not in archive.NameToInfo:
        return {}
    rels = {}
    for rel in _parse(archive, rels_member):
        if _local(rel.tag) != "Relationship":
            continue
        target = rel.get("Target") or ""
        if rel.get("TargetMode") == "External":
            continue
        resolved = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
        rels[rel.get("Id") or ""] = (resolved, rel.get("Type") or "")
    return rels


def _target(archive: zipfile.ZipFile, part: str, kind: str) -> str | None:
    return next((t for t, k in _relationships(archive, part).values() if k.endswith(kind)), None)


def _parse(archive: zipfile.ZipFile, member: str) -> Any:
    """A small part (workbook, relationships, styles) as a tree."""
    from lxml import etree

    with archive.open(member) as source:
        return etree.parse(source, _parser()).getroot()


def _parser() -> Any:
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _elements(source: IO[bytes], name: str) -> Iterator[Any]:
    """Each `name` element of a large part, read as it ends and dropped after use (with the
    already read siblings, which lxml would otherwise keep attached to their parent)."""
    from lxml import etree

    events = etree.iterparse(source, events=("end",), tag=f"{{*}}{name}", resolve_entities=False,
                             no_network=True, load_dtd=False)
    for _, element in events:
        yield element
        element.clear(keep_tail=False)
        parent = element.getparent()
        if parent is not None:
            while element.getprevious() is not None:
                del parent[0]


def _local(tag: Any) -> str:
    """An element's name without its namespace (transitional and strict OOXML alike)."""
    if not isinstance(tag, str):
        return ""  # comments and processing instructions
    return tag.rsplit("}", 1)[-1]
