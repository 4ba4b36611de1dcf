"""OpenDocument files (.odt, .ods, .odp: LibreOffice's and WPS's own formats) through odfpy.

They read like their Office counterparts: headings become Markdown ``#`` lines (from the
outline level LibreOffice writes on ``text:h``), tables Markdown rows under their header row,
each sheet a segment with ``sheet``, each slide a segment with ``page``. The zip container is
checked for bombs before odfpy reads its parts whole.

Spreadsheets declare repeated cells and rows (``number-columns-repeated``): an empty row to
the end of a sheet is one element repeated 1,048,576 times. Repeats are expanded only up to
the last cell that holds text, and at most :data:`MAX_REPEAT` times, so a styled empty column
costs nothing.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any
from xml.parsers.expat import ExpatError

from services.ingest.documents.parsers.base import (
    ParseError,
    ParseLimits,
    Segment,
    markdown_table,
    normalise,
    single,
)
from services.ingest.documents.parsers.zipsafe import check_container

TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
DRAW_NS = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
PRESENTATION_NS = "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"

# A repeated non-empty cell or row is expanded at most this often (real sheets repeat a few).
MAX_REPEAT = 1000


def _load(name: str, data: bytes, limits: ParseLimits, kind: str) -> Any:
    from odf.opendocument import load

    check_container(name, data, limits)
    try:
        return load(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, ExpatError) as error:
        raise ParseError(f"{name}: not a readable {kind} file ({type(error).__name__}: {error})") from None


def _local(element: Any) -> tuple[str, str]:
    return element.qname if hasattr(element, "qname") else ("", "")


def _text(element: Any) -> str:
    """An element's text with ODF's spaces, tabs and line breaks (``teletype`` knows them)."""
    from odf import teletype

    return str(teletype.extractText(element))


def _repeat(element: Any, attribute: str) -> int:
    value = element.attributes.get((TABLE_NS, attribute))
    try:
        return max(1, min(int(value), MAX_REPEAT)) if value else 1
    except ValueError:
        return 1


def _table_rows(table: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in _descendants(table, (TABLE_NS, "table-row")):
        cells: list[str] = []
        for cell in row.childNodes:
            if _local(cell) not in ((TABLE_NS, "table-cell"), (TABLE_NS, "covered-table-cell")):
                continue
            text = " ".join(_text(p) for p in cell.childNodes if _local(p)[0] == TEXT_NS).strip()
            cells.extend([text] * (_repeat(cell, "number-columns-repeated") if text else 1))
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            rows.extend([cells] * _repeat(row, "number-rows-repeated"))
        else:
            rows.append([])
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _descendants(element: Any, qname: tuple[str, str]) -> Iterator[Any]:
    """Rows of this table, not of tables nested in its cells (those are read as cell text)."""
    for child in element.childNodes:
        if _local(child) == qname:
            yield child
        elif _local(child)[0] == TABLE_NS and _local(child)[1] in (
            "table-header-rows",
            "table-rows",
            "table-row-group",
        ):
            yield from _descendants(child, qname)


def _blocks(element: Any) -> Iterator[str]:
    """A text body in reading order: headings, paragraphs, list items, tables, frames."""
    for child in element.childNodes:
        namespace, local = _local(child)
        if (namespace, local) == (TEXT_NS, "h"):
            level = child.attributes.get((TEXT_NS, "outline-level")) or "1"
            heading = " ".join(_text(child).split())
            if heading:
                yield f"{'#' * max(1, min(int(level) if level.isdigit() else 1, 6))} {heading}"
        elif (namespace, local) == (TEXT_NS, "p"):
            yield _text(child)
            yield from (block for frame in _frames(child) for block in _blocks(frame))
        elif (namespace, local) == (TABLE_NS, "table"):
            yield markdown_table(_table_rows(child))
        elif (namespace, local) in (
            (TEXT_NS, "list"),
            (TEXT_NS, "list-item"),
            (TEXT_NS, "section"),
        ) or namespace == DRAW_NS:
            yield from _blocks(child)


def _frames(paragraph: Any) -> Iterator[Any]:
    """Text boxes anchored in a paragraph (their text is not part of the paragraph's own)."""
    for child in paragraph.childNodes:
        if _local(child) == (DRAW_NS, "frame"):
            for box in child.childNodes:
                if _local(box) == (DRAW_NS, "text-box"):
                    yield box


def _joined(blocks: Iterator[str]) -> str:
    return normalise("\n\n".join(block for block in blocks if block.strip()))


def parse_odt(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    document = _load(name, data, limits, ".odt")
    return single(_joined(_blocks(document.text)))


def parse_ods(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """One segment per sheet that holds text (``sheet`` = its name), as a Markdown table."""
    document = _load(name, data, limits, ".ods")
    segments = []
    for sheet in document.spreadsheet.childNodes:
        if _local(sheet) != (TABLE_NS, "table"):
            continue
        title = sheet.attributes.get((TABLE_NS, "name")) or ""
        table = markdown_table(_table_rows(sheet))
        if table:
            segments.append(Segment(table, {"sheet": str(title)}))
    return segments


def parse_odp(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """One segment per slide (``page`` = slide number): its title as a heading, then its
    frames in document order (text boxes, tables), then the speaker notes."""
    document = _load(name, data, limits, ".odp")
    slides = [page for page in document.presentation.childNodes if _local(page) == (DRAW_NS, "page")]
    if len(slides) > limits.max_pages:
        raise ParseError(f"{name}: too many slides ({len(slides)}, limit {limits.max_pages})")
    segments = []
    for number, slide in enumerate(slides, start=1):
        parts: list[str] = []
        for frame in slide.childNodes:
            if _local(frame) == (PRESENTATION_NS, "notes"):
                notes = _joined(_blocks(frame))
                if notes:
                    parts.append(f"Notes: {notes}")
                continue
            text = _joined(_blocks(frame))
            if not text:
                continue
            if frame.attributes.get((PRESENTATION_NS, "class")) == "title" and not parts:
                text = "# " + " ".join(text.split())
            parts.append(text)
        text = normalise("\n\n".join(parts))
        if text:
            segments.append(Segment(text, {"page": str(number)}))
    return segments
