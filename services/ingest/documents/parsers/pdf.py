"""PDF: the text layer page by page; pages without one (scans) go through OCR.

PDFium (pypdfium2) tells text pages from scans, renders scans and decodes pictures. With
``layout`` on (the default) every text page is rebuilt from pdfplumber's word boxes
(:mod:`pdf_layout`): columns read in order, ruled and borderless tables as Markdown rows
under their header, headings from font size and weight as ``#`` lines
(:mod:`pdf_headings`), pictures with text OCRed in place (:mod:`pdf_images`). With it off,
the page is PDFium's text layer, with ruled tables only (what the parser did before; the
parsing benchmark compares the two). Either way running headers, footers and page numbers
are kept once (:mod:`pdf_running`).

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
from services.ingest.documents.parsers.pdf_headings import HeadingStyle, render
from services.ingest.documents.parsers.pdf_images import Picture, covered_by_text, page_pictures
from services.ingest.documents.parsers.pdf_layout import Block, analyse_page
from services.ingest.documents.parsers.pdf_lines import page_words
from services.ingest.documents.parsers.pdf_running import drop_running_lines
from services.ingest.documents.parsers.pdf_tables import page_text_with_tables
from services.ingest.documents.parsers.pictures import picture_line

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


def _page(
    document: Any, index: int, limits: ParseLimits, budget: int
) -> tuple[str, Any, bool, list[Picture]]:
    """(text layer, None, whether it draws lines, pictures worth OCR) for a text page, or
    ("", rendered RGB pixels, False, []) for a scan. At most ``budget`` pictures are decoded."""
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
            return text, None, ruled, page_pictures(page, limits, budget)
        return "", np.array(page.render(scale=OCR_SCALE).to_pil().convert("RGB")), False, []
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


def _pictures_text(
    page: Any, pictures: list[Picture], limits: ParseLimits
) -> list[tuple[tuple[float, float, float, float], str]]:
    """(box, ``[image] ...`` line) of the pictures the text layer does not already cover: their
    OCR text, and a caption placeholder when the caller captions (run outside the lock)."""
    if not pictures:
        return []
    words = page_words(page)
    found = []
    for picture in pictures:
        if covered_by_text(picture, words):
            continue
        text = " ".join(normalise(recognise(picture.pixels)).split("\n")).strip()
        if line := picture_line(picture.pixels, text, limits):
            found.append((picture.box, line))
    return found


def parse_pdf(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    return parse_pdf_pages(name, data, limits)


def parse_pdf_pages(name: str, data: bytes, limits: ParseLimits, *, layout: bool = True) -> list[Segment]:
    """The PDF's pages as segments; ``layout=False`` is the plain text layer (ruled tables only)."""
    import pypdfium2 as pdfium

    with _PDFIUM:
        document, count = _open(name, data, limits)
    # Per page: its metadata and either finished text or its blocks in reading order.
    pages: list[tuple[dict[str, str], str | list[Block]]] = []
    plumber = None  # opened on the first page that needs it
    budget = limits.embedded_images if layout else 0
    try:
        for index in range(count):
            with _PDFIUM:
                try:
                    text, pixels, ruled, pictures = _page(document, index, limits, budget)
                except pdfium.PdfiumError as error:
                    raise ParseError(f"{name}: page {index + 1} is damaged ({error})") from None
            budget -= len(pictures)
            metadata = {"page": str(index + 1)}
            if pixels is not None:
                metadata["ocr"] = "true"
                pages.append((metadata, normalise(recognise(pixels))))
                continue
            if layout or ruled:
                plumber = plumber or _open_plumber(data)
            if plumber is None:
                pages.append((metadata, text))
            elif layout:
                pages.append((metadata, _layout_blocks(plumber, index, pictures, ruled, limits) or text))
            else:
                pages.append((metadata, (page_text_with_tables(plumber, index) if ruled else None) or text))
    finally:
        with _PDFIUM:
            document.close()
        if plumber is not None:
            plumber.close()
    style = HeadingStyle([content for _, content in pages if isinstance(content, list)])
    segments = []
    for metadata, content in pages:
        text = content if isinstance(content, str) else render(content, style)
        if text:
            segments.append(Segment(text, metadata))
    if not segments:
        raise ParseError(f"{name}: no text found (no text layer, and OCR recognised nothing)")
    return drop_running_lines(segments)


def _layout_blocks(
    plumber: Any, index: int, pictures: list[Picture], ruled: bool, limits: ParseLimits
) -> list[Block] | None:
    """The page's blocks in reading order, or None (keep PDFium's text) when analysis fails."""
    page = plumber.pages[index]
    try:
        return analyse_page(page, _pictures_text(page, pictures, limits), ruled=ruled) or None
    except Exception as error:  # the text layer is still there: a layout failure must not lose it
        log.warning("layout analysis failed on page %d: %s: %s", index + 1, type(error).__name__, error)
        return None
    finally:
        page.close()
