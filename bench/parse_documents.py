"""The documents ``make bench-parse`` reads: the evaluation PDFs plus a few written on the spot.

Written here (deterministic, no network): a two-column field report drawn line by line across
both columns, as typesetters and report generators draw (PDFium); a sales report with a
20-row borderless table under a heading (PDFium); and, when LibreOffice is installed, a
Writer document with a picture of text and one with a two-column section.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testing.pdf_files import Text, line_by_line_pdf, two_column_page

EVALDATA = Path(os.environ.get("ZHIKU_EVALDATA", Path(__file__).resolve().parents[2] / "shared" / "evaldata"))

FIELD_LEFT = [
    "The northern station recorded steady",
    "rainfall through the spring months and",
    "the river stayed within its banks all",
    "season long, as the gauges showed.",
    "Volunteers from the valley school read",
    "the rain gauge every morning at seven",
    "and sent the readings by radio.",
]
FIELD_RIGHT = [
    "The southern station measured strong",
    "winds in the autumn months and crews",
    "repaired the broken mast twice before",
    "the first of the winter storms came.",
    "The new anemometer, fitted in October,",
    "logged a peak gust of 41 metres per",
    "second during the November storm.",
]
REGIONS = [f"Region {n:02d}" for n in range(1, 21)]


def _sales_figure(row: int, quarter: int) -> str:
    return f"{(row * 37 + quarter * 113) % 900 + 100:,}"


def field_report() -> bytes:
    return line_by_line_pdf([two_column_page("Field Report 2024", FIELD_LEFT, FIELD_RIGHT)])


def sales_report() -> bytes:
    texts = [
        Text(72, 72, "Regional Sales Review", size=18, bold=True),
        Text(72, 100, "Quarterly unit sales per region, as reported by the regional offices in January."),
        Text(72, 114, "Figures are units sold; returns are already deducted from every figure."),
        Text(72, 150, "Units Sold by Quarter", size=13, bold=True),
    ]
    columns = [72, 200, 280, 360, 440]
    for x, name in zip(columns, ["Region", "Q1", "Q2", "Q3", "Q4"], strict=True):
        texts.append(Text(x, 180, name, bold=True))
    for index, region in enumerate(REGIONS):
        y = 198 + index * 16
        texts.append(Text(columns[0], y, region))
        for quarter in range(1, 5):
            texts.append(Text(columns[quarter], y, _sales_figure(index, quarter)))
    texts.append(
        Text(72, 198 + len(REGIONS) * 16 + 30, "Offices will confirm the figures by the end of March.")
    )
    return line_by_line_pdf([texts])


def _writer(build: Callable[[Any], None]) -> bytes:
    import docx

    from testing.office_files import written_by_libreoffice

    document = docx.Document()
    build(document)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "document.docx"
        document.save(str(source))
        return written_by_libreoffice(source, "pdf")


def delivery_note() -> bytes:
    from docx.shared import Inches
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 240), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    draw.text((30, 30), "Delivery code KX-4417", fill="black", font=font)
    draw.text((30, 120), "Received by Lena Ortiz", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    def build(document: Any) -> None:
        document.add_heading("Delivery Records", level=1)
        document.add_paragraph("The signed delivery note is pasted below as a picture.")
        document.add_picture(io.BytesIO(buffer.getvalue()), width=Inches(5))
        document.add_paragraph("Keep the original in the archive.")

    return _writer(build)


def writer_columns() -> bytes:
    from docx.enum.section import WD_SECTION
    from docx.oxml import parse_xml

    def build(document: Any) -> None:
        document.add_heading("Harbour Survey", level=1)
        document.add_paragraph("This introduction spans the whole page above both columns.")
        section = document.add_section(WD_SECTION.CONTINUOUS)
        section._sectPr.append(
            parse_xml(
                '<w:cols xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
                'w:num="2" w:space="720"/>'
            )
        )
        for text in [
            "The east pier was inspected in May and three of its timber piles need replacing.",
            "Dredging of the inner basin removed 12,000 cubic metres of silt over six weeks of work.",
            "The west breakwater lost part of its crest in the February gale and will be rebuilt in stone.",
            "New mooring buoys were laid along the west channel for visiting yachts in the summer season.",
        ]:
            document.add_paragraph(text)

    return _writer(build)


GENERATED: dict[str, Callable[[], bytes]] = {
    "field-report.pdf": field_report,
    "sales-report.pdf": sales_report,
}
NEEDS_LIBREOFFICE: dict[str, Callable[[], bytes]] = {
    "delivery-note.pdf": delivery_note,
    "harbour-survey.pdf": writer_columns,
}


def load(name: str) -> bytes | None:
    """A document's bytes by the name the question set uses; None when it cannot be made here."""
    source, _, file = name.partition(":")
    if source == "evaldata":
        path = EVALDATA / "docs" / file
        return path.read_bytes() if path.exists() else None
    if file in GENERATED:
        return GENERATED[file]()
    if file in NEEDS_LIBREOFFICE and shutil.which("soffice"):
        return NEEDS_LIBREOFFICE[file]()
    return None
