"""PDFs for tests and benchmarks, written by PDFium itself (pypdfium2's raw API).

LibreOffice writes a two-column page column by column, so its text layer is already in
reading order. Many other producers (typesetting engines, report generators, print
drivers) draw a page line by line across both columns; :func:`line_by_line_pdf` writes such
a page, text placed at exact coordinates with the standard Helvetica fonts, so the parser
meets the interleaved order real files have.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

PAGE_WIDTH, PAGE_HEIGHT = 612.0, 792.0


@dataclass(frozen=True)
class Text:
    """One piece of text: its left x and baseline y from the page's top, in points."""

    x: float
    y: float
    text: str
    size: float = 10.0
    bold: bool = False


@dataclass(frozen=True)
class Picture:
    """A picture (encoded PNG or JPEG bytes) drawn with its top left at x, y from the page's
    top, ``width`` by ``height`` points."""

    x: float
    y: float
    width: float
    height: float
    image: bytes


def _insert_picture(document: object, page: object, picture: Picture) -> None:
    import io

    import pypdfium2 as pdfium
    from PIL import Image

    image = pdfium.PdfImage.new(document)
    with Image.open(io.BytesIO(picture.image)) as pil:
        bitmap = pdfium.PdfBitmap.from_pil(pil.convert("RGB"))
    image.set_bitmap(bitmap)
    bottom = PAGE_HEIGHT - picture.y - picture.height
    image.set_matrix(pdfium.PdfMatrix().scale(picture.width, picture.height).translate(picture.x, bottom))
    page.insert_obj(image)  # type: ignore[attr-defined]


def line_by_line_pdf(pages: list[list[Text]], pictures: dict[int, list[Picture]] | None = None) -> bytes:
    """A PDF whose pages draw the given texts in the given order (that order is the text layer's),
    and on the pages ``pictures`` names (0-based), those pictures (embedded image objects)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    document = pdfium.PdfDocument.new()
    for number, texts in enumerate(pages):
        page = document.new_page(PAGE_WIDTH, PAGE_HEIGHT)
        for picture in (pictures or {}).get(number, []):
            _insert_picture(document, page, picture)
        for item in texts:
            font = b"Helvetica-Bold" if item.bold else b"Helvetica"
            obj = pdfium_c.FPDFPageObj_NewTextObj(document.raw, font, ctypes.c_float(item.size))
            encoded = (item.text + "\x00").encode("utf-16-le")
            buffer = ctypes.create_string_buffer(encoded, len(encoded))
            pdfium_c.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
            pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, item.x, PAGE_HEIGHT - item.y)
            pdfium_c.FPDFPage_InsertObject(page.raw, obj)
        pdfium_c.FPDFPage_GenerateContent(page.raw)
        page.close()
    import io

    buffer_out = io.BytesIO()
    document.save(buffer_out)
    document.close()
    return buffer_out.getvalue()


def two_column_page(title: str, left: list[str], right: list[str], *, size: float = 10.0) -> list[Text]:
    """A bold title across the page, then ``left`` and ``right`` columns drawn line by line across."""
    texts = [Text(72, 72, title, size=18, bold=True)]
    y = 110.0
    for index in range(max(len(left), len(right))):
        if index < len(left):
            texts.append(Text(72, y, left[index], size=size))
        if index < len(right):
            texts.append(Text(320, y, right[index], size=size))
        y += size * 1.4
    return texts
