"""PDF: the text layer page by page with pypdfium2; pages without one (scans) go through OCR.

Pages that draw ruling lines are also given to :mod:`pdf_tables`, which turns data tables into
Markdown rows under their header; running headers, footers and page numbers are kept once
(:mod:`pdf_running`).

PDFium is not thread-safe and the worker runs tasks in threads, so every PDFium call holds one
process-wide lock; OCR of a rendered page runs outside it, one page at a time (a long scan
never holds all its page images in memory).
"""

from __future__ import annotations

import io
import logging
import threading
from typing import Any

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment, normalise
from services.ingest.documents.parsers.ocr import recognise
from services.ingest.documents.parsers.pdf_running import drop_running_lines
from services.ingest.documents.parsers.pdf_tables import page_text_with_tables

log = logging.getLogger("zhiku.ingest.parsers")

_PDFIUM = threading.Lock()

# A page whose text layer has fewer visible characters than this is treated as scanned.
MIN_TEXT_CHARS = 8
# Render scale for OCR: 2 = 144 dpi, enough for body text without slowing recognition much.
OCR_SCALE = 2.0
# Pages drawing at least this many paths (lines, rectangles) may hold ruled tables.
MIN_RULING_PATHS = 4


def _open(name: str, data: bytes, limits: ParseLimits) -> tuple[Any, int]:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        if "password" in str(error).lower():
            raise ParseError(f"{name}: the PDF is encrypted (password-protected)") from None
        raise ParseError(f"{name}: not a readable PDF ({error})") from None
    count = len(document)
    if count > limits.max_pages:
        document.close()
        raise ParseError(f"{name}: too many pages ({count}, limit {limits.max_pages})")
    return document, count


def _page(document: Any, index: int) -> tuple[str, Any, bool]:
    """(text layer, None, whether it draws lines), or ("", rendered RGB pixels, False) for a scan."""
    import numpy as np
    import pypdfium2.raw as pdfium_c

    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            text = normalise(textpage.get_text_range())
        finally:
            textpage.close()
        if sum(1 for ch in text if not ch.isspace()) >= MIN_TEXT_CHARS:
            paths = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=2)
            ruled = sum(1 for _ in zip(range(MIN_RULING_PATHS), paths, strict=False)) >= MIN_RULING_PATHS
            return text, None, ruled
        return "", np.array(page.render(scale=OCR_SCALE).to_pil().convert("RGB")), False
    finally:
        page.close()


def _open_plumber(data: bytes) -> Any:
    """pdfplumber over the same bytes, or None when it cannot read what PDFium could."""
    import pdfplumber

    try:
        return pdfplumber.open(io.BytesIO(data))
    except Exception as error:  # the text layer is still there; tables are a bonus
        log.warning(
            "pdfplumber cannot open the PDF (%s: %s); tables stay plain text", type(error).__name__, error
        )
        return None


def parse_pdf(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    import pypdfium2 as pdfium

    with _PDFIUM:
        document, count = _open(name, data, limits)
    segments = []
    plumber = None  # opened on the first page that draws lines
    try:
        for index in range(count):
            with _PDFIUM:
                try:
                    text, pixels, ruled = _page(document, index)
                except pdfium.PdfiumError as error:
                    raise ParseError(f"{name}: page {index + 1} is damaged ({error})") from None
            metadata = {"page": str(index + 1)}
            if pixels is not None:
                text = normalise(recognise(pixels))
                metadata["ocr"] = "true"
            elif ruled:
                plumber = plumber or _open_plumber(data)
                if plumber is not None:
                    text = page_text_with_tables(plumber, index) or text
            if text:
                segments.append(Segment(text, metadata))
    finally:
        with _PDFIUM:
            document.close()
        if plumber is not None:
            plumber.close()
    if not segments:
        raise ParseError(f"{name}: no text found (no text layer, and OCR recognised nothing)")
    return drop_running_lines(segments)
