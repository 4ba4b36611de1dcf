"""Office documents: Word (.docx), PowerPoint (.pptx), Excel (.xlsx, .xls).

Headings become Markdown ``#`` lines (the splitter builds heading paths from them) and every
table becomes Markdown rows under its header row.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

from services.ingest.documents.parsers.base import (
    ParseError,
    ParseLimits,
    Segment,
    cell_text,
    markdown_table,
    normalise,
    single,
)
from services.ingest.documents.parsers.ocr import embedded_image_text
from services.ingest.documents.parsers.pictures import picture_line
from services.ingest.documents.parsers.zipsafe import check_container

_OOXML_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, KeyError, ValueError, EOFError)


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_M = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"


def _paragraph_text(paragraph: Any) -> str:
    """The paragraph's text including equations (OMML ``m:t`` runs), which ``.text`` skips."""
    element = paragraph._p
    if element.find(f".//{_M}oMath") is None:
        return str(paragraph.text)
    parts = []
    for node in element.iter(f"{_W}t", f"{_M}t", f"{_W}tab", f"{_W}br"):
        parts.append(node.text or "" if node.tag.endswith("}t") else " ")
    return "".join(parts)


class _Pictures:
    """A document's pictures in reading order: the first ``limits.embedded_images`` OCRed, each
    kept for a caption when the caller captions (see :mod:`pictures`)."""

    def __init__(self, name: str, limits: ParseLimits) -> None:
        self.name = name
        self.limits = limits
        self.left = limits.embedded_images

    def text(self, blob: bytes) -> str:
        text = ""
        if self.left > 0:
            self.left -= 1
            text = embedded_image_text(self.name, blob, self.limits)
        return picture_line(blob, text, self.limits)


def _docx_pictures(document: Any, paragraph: Any, pictures: _Pictures) -> Iterator[str]:
    for rel_id in paragraph._p.xpath(".//a:blip/@r:embed"):
        part = document.part.related_parts.get(rel_id)
        blob = getattr(part, "blob", None)
        if blob and (text := pictures.text(blob)):
            yield text


def _docx_blocks(document: Any, pictures: _Pictures) -> Iterator[str]:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            yield from _docx_pictures(document, block, pictures)
            text = _paragraph_text(block).strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = style.removeprefix("Heading ").strip()
            if style.startswith("Heading ") and level.isdigit():
                text = "#" * min(int(level), 6) + " " + text
            elif style == "Title":
                text = "# " + text
            yield text
        elif isinstance(block, Table):
            table = markdown_table([[cell.text for cell in row.cells] for row in block.rows])
            if table:
                yield table


def parse_docx(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    errors: tuple[type[Exception], ...] = (PackageNotFoundError, *_OOXML_ERRORS)
    check_container(name, data, limits)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(_docx_blocks(document, _Pictures(name, limits)))
        # Reviewers' comments carry facts too ("the deadline moved to May"): keep them, marked.
        comments = [c.text.strip() for c in document.comments if c.text.strip()]
        if comments:
            blocks.append("Comments:\n" + "\n".join(f"- {comment}" for comment in comments))
        text = "\n\n".join(blocks)
    except errors as error:
        raise ParseError(f"{name}: not a readable .docx file ({type(error).__name__}: {error})") from None
    return single(text)


def _chart_texts(chart: Any) -> Iterator[str]:
    """A chart as its title and data: one Markdown table per plot, categories down, series across."""
    if chart.has_title and (title := chart.chart_title.text_frame.text.strip()):
        yield f"Chart: {title}"
    for plot in chart.plots:
        series = list(plot.series)
        categories = [str(c) for c in plot.categories]
        if not series or not categories:
            continue
        rows = [["", *(str(s.name) for s in series)]]
        values = [list(s.values) for s in series]
        for index, category in enumerate(categories):
            rows.append([category, *(cell_text(v[index]) if index < len(v) else "" for v in values)])
        rows[0][0] = "Category"
        if table := markdown_table(rows):
            yield table


def _shape_texts(shape: Any, pictures: _Pictures) -> Iterator[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        for child in shape.shapes:
            yield from _shape_texts(child, pictures)
    elif shape.shape_type == MSO_SHAPE_TYPE.PICTURE:
        try:
            blob = shape.image.blob
        except (AttributeError, KeyError, ValueError):  # linked, not embedded, or a broken part
            return
        if text := pictures.text(blob):
            yield text
    elif getattr(shape, "has_chart", False) and shape.has_chart:
        yield from _chart_texts(shape.chart)
    elif getattr(shape, "has_table", False) and shape.has_table:
        rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
        if table := markdown_table(rows):
            yield table
    elif getattr(shape, "has_text_frame", False) and (text := shape.text_frame.text.strip()):
        yield text


def parse_pptx(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """One segment per slide (``page`` = slide number): title as a heading, shapes, tables, notes."""
    import pptx
    from pptx.exc import PackageNotFoundError

    errors: tuple[type[Exception], ...] = (PackageNotFoundError, *_OOXML_ERRORS)
    check_container(name, data, limits)
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
        slides = list(presentation.slides)
        if len(slides) > limits.max_pages:
            raise ParseError(f"{name}: too many slides ({len(slides)}, limit {limits.max_pages})")
        segments = []
        pictures = _Pictures(name, limits)
        for number, slide in enumerate(slides, start=1):
            title_shape = slide.shapes.title
            title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
            parts = [f"# {title}"] if title else []
            for shape in slide.shapes:
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                parts.extend(_shape_texts(shape, pictures))
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame
                if notes is not None and notes.text.strip():
                    parts.append(f"Notes: {notes.text.strip()}")
            text = normalise("\n\n".join(parts))
            if text:
                segments.append(Segment(text, {"page": str(number)}))
    except ParseError:
        raise
    except errors as error:
        raise ParseError(f"{name}: not a readable .pptx file ({type(error).__name__}: {error})") from None
    return segments


def _sheet_segment(sheet: str, rows: list[list[str]]) -> list[Segment]:
    table = markdown_table(rows)
    return single(f"# {sheet}\n\n{table}", {"sheet": sheet}) if table else []


def parse_xlsx(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """One segment per sheet: the sheet name as a heading, then its rows as a Markdown table."""
    import openpyxl

    errors: tuple[type[Exception], ...] = (*_OOXML_ERRORS, OSError)
    check_container(name, data, limits)
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except errors as error:  # openpyxl's InvalidFileException is an OSError
        raise ParseError(f"{name}: not a readable .xlsx file ({type(error).__name__}: {error})") from None
    try:
        segments: list[Segment] = []
        for worksheet in workbook.worksheets:
            rows = [[cell_text(value) for value in row] for row in worksheet.iter_rows(values_only=True)]
            segments.extend(_sheet_segment(worksheet.title, rows))
    finally:
        workbook.close()
    return segments


def parse_xls(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """Legacy Excel 97-2003 via xlrd; dates come back as dates, not serial numbers."""
    import xlrd
    from xlrd.biffh import XLRDError
    from xlrd.compdoc import CompDocError

    try:
        # xlrd reports damage by printing to stdout; the ParseError below says it instead.
        book = xlrd.open_workbook(file_contents=data, on_demand=True, logfile=io.StringIO())
    except (XLRDError, CompDocError, ValueError, IndexError, AssertionError) as error:
        raise ParseError(f"{name}: not a readable .xls file ({type(error).__name__}: {error})") from None
    try:
        segments: list[Segment] = []
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            rows = []
            for r in range(sheet.nrows):
                row = []
                for cell in sheet.row(r):
                    if cell.ctype == xlrd.XL_CELL_DATE:
                        # A date cell holds a float (the stubs type every cell's value as str | float).
                        row.append(str(xlrd.xldate_as_datetime(float(cell.value), book.datemode)))
                    elif cell.ctype == xlrd.XL_CELL_BOOLEAN:
                        row.append("TRUE" if cell.value else "FALSE")
                    else:
                        row.append(cell_text(cell.value))
                rows.append(row)
            segments.extend(_sheet_segment(sheet.name, rows))
            book.unload_sheet(index)
    finally:
        book.release_resources()
    return segments
