"""Ruled tables on PDF pages as Markdown rows (pdfplumber's table finder), in reading order.

A PDF's text layer has no table structure: a row comes out as "SKU-9201 Hardware $32.50" and
its column names are lines away, possibly on another chunk. pdfplumber finds tables drawn with
ruling lines and returns their cells; each usable table replaces its area of the page text by
a Markdown table whose first row is the header. Only pages that draw lines are examined (the
finder parses the page again, in Python, ~0.1 s), and a "table" that is really a layout box
(cells of many lines, a single column) is ignored, so the page keeps its plain text.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from services.ingest.documents.parsers.base import markdown_table, normalise

log = logging.getLogger("zhiku.ingest.parsers")

# At most this share of a table's non-empty cells may hold several lines (layout boxes do).
MAX_MULTILINE_CELLS = 0.2


def usable_rows(cells: list[list[str | None]]) -> list[list[str]] | None:
    """The table's rows when it reads as a data table (header and body, 2+ columns), else None."""
    rows = [[(cell or "").strip() for cell in row] for row in cells]
    rows = [row for row in rows if any(row)]
    if len(rows) < 2 or max(len(row) for row in rows) < 2:
        return None
    if sum(1 for cell in rows[0] if cell) < 2:
        return None
    filled = [cell for row in rows for cell in row if cell]
    if sum("\n" in cell for cell in filled) > MAX_MULTILINE_CELLS * len(filled):
        return None
    return rows


def _text(
    page: Any, box: tuple[float, float, float, float], hole: tuple[float, float, float, float] | None = None
) -> str:
    x0, top, x1, bottom = page.bbox
    box = (max(box[0], x0), max(box[1], top), min(box[2], x1), min(box[3], bottom))
    if box[2] - box[0] <= 1 or box[3] - box[1] <= 1:
        return ""
    region = page.crop(box)
    if hole is not None:
        region = region.outside_bbox(hole, strict=False)
    return region.extract_text() or ""


Box = tuple[float, float, float, float]


def ruled_tables(page: Any) -> list[tuple[Box, list[list[str]]]]:
    """The page's usable ruled tables, (bbox, rows) each, top to bottom."""
    found = []
    for table in page.find_tables():
        rows = usable_rows(table.extract())
        if rows is not None:
            found.append((tuple(float(v) for v in table.bbox), rows))
    found.sort(key=lambda item: item[0][1])
    return found  # type: ignore[return-value]


def page_text_with_tables(plumber_pdf: Any, index: int) -> str | None:
    """The page's text with its data tables as Markdown, or None when it has none we can use."""
    page = plumber_pdf.pages[index]
    try:
        found = ruled_tables(page)
        if not found:
            return None
        for (previous, _), (current, _) in itertools.pairwise(found):
            if current[1] < previous[3]:
                return None  # tables side by side: keep the plain text rather than guess an order
        x0, top, x1, bottom = page.bbox
        parts: list[str] = []
        cursor = top
        for bbox, rows in found:
            parts.append(_text(page, (x0, cursor, x1, bbox[1])))
            parts.append(_text(page, (x0, bbox[1], x1, bbox[3]), hole=bbox))
            parts.append(markdown_table(rows))
            cursor = bbox[3]
        parts.append(_text(page, (x0, cursor, x1, bottom)))
        return normalise("\n\n".join(part for part in parts if part.strip()))
    except Exception as error:  # a finder failure must not lose the page: plain text instead
        log.warning("table extraction failed on page %d: %s: %s", index + 1, type(error).__name__, error)
        return None
    finally:
        page.close()
