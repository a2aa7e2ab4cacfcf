"""Functions that write real test files of every supported format into a folder. Shared by
parser, chunker and ingestion tests; each returns the path it wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

TXT_EN = """Acme Widget Manual

The Acme X200 is a compact widget designed for home use. It has a long battery life.

Warranty: the X200 is covered for two years from the date of purchase.
"""

TXT_ZH = "产品说明\n\n本产品的保修期是自购买之日起两年。如有问题，请联系客服。\n\n电池可以使用十个小时。\n"

MARKDOWN = """# Installation

Install the package with pip. It needs Python 3.11.

## Requirements

- A 64-bit CPU
- 2 GB of memory

### Optional extras

The GPU build is optional.

# Usage

Run the `acme` command.

```
acme --help
```

| Option | Meaning |
|--------|---------|
| -v | verbose output |
| -q | quiet mode |
"""

HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Acme Support Page</title></head>
<body>
<h1>Returns</h1>
<p>You can return any product within 30 days.</p>
<h2>Refunds</h2>
<p>Refunds are paid to the original card.</p>
<table>
<tr><th>Product</th><th>Price</th></tr>
<tr><td>X200</td><td>100 EUR</td></tr>
<tr><td>Y300</td><td>250 EUR</td></tr>
</table>
<h1>Contact</h1>
<p>Write to support@example.com.</p>
</body></html>
"""

QA_ROWS = [
    ("What is the warranty period of the X200?", "Two years from the date of purchase."),
    ("How long does the battery last?", "About ten hours of normal use."),
    ("保修期是多久？", "自购买之日起两年。"),
]

PDF_PAGE1 = ("The Acme X200 is a compact widget designed for home use. It has a long battery life and a sturdy "
             "case made of recycled aluminium. ") * 2
PDF_PAGE2 = "Repairs are free during the first two years. Send the widget with the receipt."


def write_txt_utf8(folder: Path, name: str = "manual.txt", bom: bool = False) -> Path:
    path = folder / name
    path.write_bytes(("\ufeff" if bom else "").encode("utf-8") + TXT_EN.encode("utf-8"))
    return path


def write_txt_gbk(folder: Path, name: str = "说明.txt") -> Path:
    path = folder / name
    path.write_bytes(TXT_ZH.encode("gbk"))
    return path


def write_txt_utf16(folder: Path, name: str = "utf16.txt", bom: bool = True) -> Path:
    path = folder / name
    path.write_bytes(TXT_ZH.encode("utf-16") if bom else TXT_ZH.encode("utf-16-le"))
    return path


def write_md(folder: Path, name: str = "guide.md") -> Path:
    path = folder / name
    path.write_text(MARKDOWN, encoding="utf-8")
    return path


def write_html(folder: Path, name: str = "support.html") -> Path:
    path = folder / name
    path.write_text(HTML, encoding="utf-8")
    return path


def write_docx(folder: Path, name: str = "report.docx") -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Annual Report", 0)
    document.add_heading("Sales", 1)
    document.add_paragraph("Sales grew by ten percent in the northern region.")
    document.add_heading("Details", 2)
    document.add_paragraph("The X200 sold best in the second quarter.")
    document.add_paragraph("Online shop", style="List Bullet")
    table = document.add_table(rows=3, cols=2)
    for i, row in enumerate([("Model", "Units"), ("X200", "1200"), ("Y300", "800")]):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
    document.add_heading("Outlook", 1)
    document.add_paragraph("明年计划进入新的市场。")
    path = folder / name
    document.save(str(path))
    return path


def write_pdf(folder: Path, name: str = "manual.pdf") -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Acme PDF Manual")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.cell(text="1 Introduction", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 6, PDF_PAGE1)
    pdf.ln(6)
    pdf.multi_cell(0, 6, "Warranty information: the infor-\nmation about repairs is in the next section.")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.cell(text="2 Repairs", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 6, PDF_PAGE2)
    path = folder / name
    pdf.output(str(path))
    return path


def write_blank_pdf(folder: Path, name: str = "scanned.pdf") -> Path:
    """A valid PDF page without any text layer (what a scan without OCR looks like)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")
    path = folder / name
    pdf.output(str(path))
    return path


def write_encrypted_pdf(folder: Path, name: str = "secret.pdf") -> Path:
    """A PDF with a user password (RC4, which pypdf decrypts without extra packages)."""
    from pypdf import PdfReader, PdfWriter

    source = write_pdf(folder, "plain-for-encryption.pdf")
    writer = PdfWriter()
    for page in PdfReader(source).pages:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="RC4-128")
    path = folder / name
    with path.open("wb") as handle:
        writer.write(handle)
    source.unlink()
    return path


def write_corrupt_pdf(folder: Path, name: str = "corrupt.pdf") -> Path:
    path = folder / name
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF garbage")
    return path


def write_csv_qa(folder: Path, name: str = "faq.csv", encoding: str = "utf-8") -> Path:
    import csv

    path = folder / name
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Answer", "Category"])
        for question, answer in QA_ROWS:
            writer.writerow([question, answer, "support"])
    return path


def write_csv_table(folder: Path, name: str = "prices.csv", delimiter: str = ",") -> Path:
    path = folder / name
    rows = [["model", "price", "colour"], ["X200", "100", "red, blue"], ["Y300", "250", "black"]]
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def write_xlsx(folder: Path, name: str = "book.xlsx") -> Path:
    from openpyxl import Workbook

    workbook = Workbook()
    faq = workbook.active
    faq.title = "FAQ"
    faq.append(["问题", "答案"])
    for question, answer in QA_ROWS:
        faq.append([question, answer])
    prices = workbook.create_sheet("Prices")
    prices.append(["Model", "Price", "In stock"])
    prices.append(["X200", 100.0, True])
    prices.append(["Y300", 249.5, False])
    path = folder / name
    workbook.save(str(path))
    return path


def write_json_qa(folder: Path, name: str = "faq.json") -> Path:
    path = folder / name
    path.write_text(json.dumps([{"q": q, "a": a, "id": i} for i, (q, a) in enumerate(QA_ROWS)], ensure_ascii=False),
                    encoding="utf-8")
    return path


def write_json_records(folder: Path, name: str = "articles.json") -> Path:
    records = {"data": [
        {"id": 1, "content": "The X200 ships in a recycled box.", "title": "Packaging", "tags": ["eco", "box"]},
        {"id": 2, "title": "Colours", "body": "The X200 comes in red and blue.", "meta": {"author": "Ann", "year": 2024}},
    ]}
    path = folder / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def write_jsonl_qa(folder: Path, name: str = "faq.jsonl") -> Path:
    path = folder / name
    lines = [json.dumps({"Question": q, "Response": a}, ensure_ascii=False) for q, a in QA_ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl_records(folder: Path, name: str = "notes.jsonl") -> Path:
    path = folder / name
    lines = [json.dumps({"text": "First note about batteries.", "level": 1}),
             json.dumps({"text": "Second note about screens.", "level": 2})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_empty(folder: Path, name: str = "empty.txt") -> Path:
    path = folder / name
    path.write_bytes(b"")
    return path


def write_unsupported(folder: Path, name: str = "data.xyz") -> Path:
    path = folder / name
    path.write_text("some content", encoding="utf-8")
    return path


def write_unreadable(folder: Path, name: str = "locked.txt") -> Path:
    """A file without read permission (the test must skip when running as root)."""
    path = folder / name
    path.write_text("secret", encoding="utf-8")
    os.chmod(path, 0)
    return path


def write_all(folder: Path) -> dict[str, Path]:
    """One valid file of every supported format, keyed by a short label."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "txt": write_txt_utf8(folder), "txt_gbk": write_txt_gbk(folder), "md": write_md(folder),
        "html": write_html(folder), "docx": write_docx(folder), "pdf": write_pdf(folder),
        "csv_qa": write_csv_qa(folder), "csv": write_csv_table(folder), "tsv": write_csv_table(folder, "t.tsv", "\t"),
        "xlsx": write_xlsx(folder), "json_qa": write_json_qa(folder), "json": write_json_records(folder),
        "jsonl_qa": write_jsonl_qa(folder), "jsonl": write_jsonl_records(folder),
    }


# ---- files a real mixed folder holds (issue 10) ---------------------------------------------------
def write_owner_password_pdf(folder: Path, name: str = "protected.pdf", user_password: str = "") -> Path:
    """A copy-protected PDF: AES-256 with an owner password; the user password is empty unless
    given (then it needs a password to open)."""
    from pypdf import PdfReader, PdfWriter

    source = write_pdf(folder, f"plain-for-{name}")
    writer = PdfWriter()
    for page in PdfReader(source).pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="x", algorithm="AES-256")
    path = folder / name
    with path.open("wb") as handle:
        writer.write(handle)
    source.unlink()
    return path


def write_encrypted_office(folder: Path, name: str = "locked.xlsx", password: str = "pw") -> Path:
    """A password-protected .xlsx or .docx as Office writes it (an OLE file with EncryptionInfo
    and EncryptedPackage streams), made by msoffcrypto-tool from a plain file."""
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = (write_xlsx if name.endswith(".xlsx") else write_docx)(folder, f"plain-{name}")
    path = folder / name
    with plain.open("rb") as source, path.open("wb") as target:
        OOXMLFile(source).encrypt(password, target)
    plain.unlink()
    return path


def write_legacy_ole(folder: Path, name: str = "old.xlsx") -> Path:
    """An OLE compound file without encryption streams (what a legacy .xls/.doc is): an encrypted
    file whose two stream names are changed in its directory (UTF-16 names, same length)."""
    path = write_encrypted_office(folder, name)
    data = path.read_bytes()
    for old, new in (("EncryptionInfo", "WorkbookStream"), ("EncryptedPackage", "SummaryStreamXYZ")):
        data = data.replace(old.encode("utf-16-le"), new.encode("utf-16-le"))
    path.write_bytes(data)
    return path


def write_ndjson(folder: Path, name: str = "events.ndjson") -> Path:
    path = folder / name
    lines = [json.dumps({"text": "The X200 battery was replaced under warranty.", "ticket": 1}),
             json.dumps({"text": "A Y300 screen arrived cracked.", "ticket": 2})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_title_row_csv(folder: Path, name: str = "cups.csv") -> Path:
    """A CSV whose first line is a title row, then the real header."""
    path = folder / name
    path.write_text("Stanley Cups,,\nTeam,Location,Stanley Cups\nBlues,STL,1\nFlyers,PHI,2\nMaple Leafs,TOR,13\n",
                    encoding="utf-8")
    return path


def write_mixed_folder(folder: Path) -> Path:
    """Six text files of ~1,400 characters each, a broken PDF and an empty file (the two are
    skipped with their reasons): a folder whose ingest spans several embedding batches."""
    folder.mkdir(parents=True)
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(f"Document {i} about the warranty of model {i}. " * 30, encoding="utf-8")
    (folder / "doc2b.pdf").write_bytes(b"%PDF-1.4\n not a pdf")
    (folder / "doc3b.txt").write_bytes(b"")
    return folder


_SHEET_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XLSX_PARTS = {
    "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
    'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/'
    'workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
    'spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
    "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
    f'package/2006/relationships"><Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
    '</Relationships>',
    "xl/workbook.xml": f'<?xml version="1.0" encoding="UTF-8"?><workbook {_SHEET_NS} xmlns:r="{_REL_NS}"><sheets>'
    '<sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
    f'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{_REL_NS}/worksheet" '
    f'Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{_REL_NS}/sharedStrings" '
    'Target="sharedStrings.xml"/></Relationships>',
}


def write_tall_xlsx(folder: Path, name: str = "tall.xlsx", member_mb: float = 4, *, far_column: str = "") -> Path:
    """A bomb-like workbook written straight as XML: one sheet (no <dimension>, no cell references)
    of `member_mb` MB of short rows over 50 shared strings, compressed about 27:1. `far_column`
    ("XFD") adds one cell that far right to every row (a row then counts that many cells)."""
    import zipfile

    strings = "".join(f"<si><t>product {i} kettle with a fairly long description number {i * 7919}</t></si>"
                      for i in range(50))
    far = f'<c r="{far_column}1" t="s"><v>0</v></c>' if far_column else ""
    path = folder / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in _XLSX_PARTS.items():
            archive.writestr(member, text)
        archive.writestr("xl/sharedStrings.xml",
                         f'<?xml version="1.0" encoding="UTF-8"?><sst {_SHEET_NS}>{strings}</sst>')
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as handle:
            handle.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet {_SHEET_NS}><sheetData>'.encode())
            handle.write(b'<row><c t="inlineStr"><is><t>name</t></is></c><c t="inlineStr"><is><t>units</t></is></c>'
                         b'<c t="inlineStr"><is><t>colour</t></is></c></row>')
            target, size, r = int(member_mb * 1024 * 1024), 0, 1
            while size < target:
                rows = "".join(f'<row><c t="s"><v>{i % 50}</v></c><c><v>{i}</v></c><c t="s"><v>{(i * 7) % 50}</v></c>'
                               f"{far}</row>" for i in range(r, r + 1000)).encode()
                handle.write(rows)
                size, r = size + len(rows), r + 1000
            handle.write(b"</sheetData></worksheet>")
    return path


def write_docx_with_huge_comment(folder: Path, name: str = "commented.docx") -> Path:
    """A DOCX whose document.xml holds an XML comment over libxml2's 10 MB text limit ("Comment too
    big"); random text, so the zip checks (ratio) let it through to the parser."""
    import base64
    import zipfile

    source = write_docx(folder, "_source.docx")
    path = folder / name
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "word/document.xml":
                text = data.decode("utf-8")
                body = text.index("<w:body>")
                comment = base64.b64encode(os.urandom(8 * 1024 * 1024)).decode("ascii")
                data = (text[:body] + "<!--" + comment + "-->" + text[body:]).encode("utf-8")
            archive.writestr(item, data)
    source.unlink()
    return path
