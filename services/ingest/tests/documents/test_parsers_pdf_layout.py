"""PDF layout on real files: column order, borderless tables, headings, pictures with text."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from services.ingest.documents.parsers import ParseLimits, parse
from services.ingest.documents.parsers.base import DEFAULT_LIMITS
from services.ingest.documents.parsers.pdf import parse_pdf_pages
from services.ingest.documents.splitter import split_segments
from services.ingest.tests.conftest import DOCS
from testing.pdf_files import line_by_line_pdf, two_column_page

LEFT = [
    "The northern station recorded steady",
    "rainfall through the spring months and",
    "the river stayed within its banks all",
    "season long, as the gauges showed.",
]
RIGHT = [
    "The southern station measured strong",
    "winds in the autumn months and crews",
    "repaired the broken mast twice before",
    "the first of the winter storms came.",
]
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_line_by_line_two_column_page_reads_column_by_column() -> None:
    data = line_by_line_pdf([two_column_page("Field Report", LEFT, RIGHT)])
    (page,) = parse("columns.pdf", data)
    text = _flat(page.text)
    assert text.startswith("# Field Report")
    assert _flat(" ".join(LEFT)) in text and _flat(" ".join(RIGHT)) in text
    assert text.index("season long") < text.index("The southern station")
    # The text layer itself interleaves the columns: the plain reading (layout off) shows it.
    (plain,) = parse_pdf_pages("columns.pdf", data, DEFAULT_LIMITS, layout=False)
    assert "recorded steady The southern station measured" in _flat(plain.text)


def test_libreoffice_two_column_section_keeps_the_title_in_place(tmp_path: Path) -> None:
    """A Writer document: a full-width title and introduction, then a two-column section."""
    import docx
    from docx.enum.section import WD_SECTION
    from docx.oxml import parse_xml

    from testing.office_files import written_by_libreoffice

    document = docx.Document()
    document.add_heading("Annual Field Report", level=1)
    document.add_paragraph(
        "This introduction spans the whole width of the page above both columns of the report."
    )
    section = document.add_section(WD_SECTION.CONTINUOUS)
    section._sectPr.append(parse_xml(f'<w:cols xmlns:w="{W_NS}" w:num="2" w:space="720"/>'))
    left = [
        f"North {n}: the northern station recorded steady rainfall and the river stayed low." for n in (1, 2)
    ]
    right = [
        f"South {n}: the southern station measured strong winds and crews repaired the mast." for n in (1, 2)
    ]
    for paragraph in [*left, *right]:
        document.add_paragraph(paragraph * 2)
    source = tmp_path / "columns.docx"
    document.save(str(source))
    (page,) = parse("columns.pdf", written_by_libreoffice(source, "pdf"))
    text = _flat(page.text)
    assert text.startswith("# Annual Field Report This introduction spans the whole width")
    positions = [text.index(marker) for marker in ("North 1:", "North 2:", "South 1:", "South 2:")]
    assert positions == sorted(positions)
    # Column by column, never across: a left line is never followed by a right line's words.
    assert "South" not in text[: positions[2]]


def test_borderless_table_rows_carry_their_header_in_every_chunk() -> None:
    pages = parse("inventory.pdf", (DOCS / "SPARSE-2024-INV-1234_borderless_table.pdf").read_bytes())
    lines = pages[0].text.splitlines()
    header = "| Product Code | Location | Expected | Actual | Variance | Status |"
    at = lines.index(header)
    # Cells left empty on a row stay empty: each value sits under its own column.
    assert lines[at + 2 : at + 5] == [
        "| SKU-8847 | A-12 | 450 |  |  |  |",
        "|  | B-07 |  | 289 | -23 |  |",
        "| SKU-9201 |  | 780 | 778 |  | OK |",
    ]
    assert "| SKU-4563 | D-22 |  | 156 |  | CRITICAL |" in lines
    chunks = split_segments(pages, "inventory.pdf", chunk_size=160, chunk_overlap=0)
    table_chunks = [chunk for chunk in chunks if "| SKU-" in chunk.text and chunk.metadata["page"] == "1"]
    assert len(table_chunks) >= 3
    for chunk in table_chunks:
        assert chunk.text.splitlines()[0] == header, chunk.text
    assert table_chunks[0].metadata["heading"] == "INVENTORY RECONCILIATION REPORT"
    assert sum("| SKU-" in line for chunk in table_chunks for line in chunk.text.splitlines()) == 4


def test_headings_from_font_size_and_weight_reach_the_heading_path() -> None:
    pages = parse("inventory.pdf", (DOCS / "SPARSE-2024-INV-1234_borderless_table.pdf").read_bytes())
    assert pages[0].text.startswith("# INVENTORY RECONCILIATION REPORT\n")  # 18 pt bold: level 1
    assert "\n## Summary Statistics:\n" in pages[0].text  # bold at body size: the next level
    assert "Report ID: SPARSE-2024-INV-1234" in pages[0].text.splitlines()  # bold label + value: no heading
    chunks = split_segments(pages, "inventory.pdf", chunk_size=300, chunk_overlap=0)
    total = next(chunk for chunk in chunks if "Total Variance Cost: $4,287.50" in chunk.text)
    assert total.metadata["heading"] == "INVENTORY RECONCILIATION REPORT > Summary Statistics:"
    # Headings carry across the page break: page 2 opens inside "Detailed Analysis by Category:".
    first_on_two = next(chunk for chunk in chunks if chunk.metadata["page"] == "2")
    assert (
        first_on_two.metadata["heading"] == "INVENTORY RECONCILIATION REPORT > Detailed Analysis by Category:"
    )


def _text_picture(lines: list[str]) -> bytes:
    image = Image.new("RGB", (900, 60 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    for number, line in enumerate(lines):
        draw.text((30, 30 + 90 * number), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pdf_with_picture(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A Writer document exported to PDF: text, a picture of text, more text."""
    import docx
    from docx.shared import Inches

    from testing.office_files import written_by_libreoffice

    document = docx.Document()
    document.add_paragraph("The signed delivery note is pasted below as a picture.")
    document.add_picture(
        io.BytesIO(_text_picture(["Delivery code KX-4417", "Received by Lena Ortiz"])), width=Inches(5)
    )
    document.add_paragraph("Keep the original in the archive.")
    source = tmp_path_factory.mktemp("picture") / "note.docx"
    document.save(str(source))
    return written_by_libreoffice(source, "pdf")


def test_picture_on_a_text_page_is_ocred_in_place(pdf_with_picture: bytes) -> None:
    (page,) = parse("note.pdf", pdf_with_picture)
    assert "ocr" not in page.metadata  # a text page: only the picture went through OCR
    text = page.text
    picture = next(line for line in text.splitlines() if line.startswith("[image] "))
    assert "KX-4417" in picture.replace(" ", "") and "lena" in picture.lower()
    assert text.index("pasted below") < text.index("[image]") < text.index("Keep the original")


def test_picture_ocr_respects_the_embedded_image_limit(pdf_with_picture: bytes) -> None:
    (page,) = parse("note.pdf", pdf_with_picture, limits=ParseLimits(embedded_images=0))
    assert "[image]" not in page.text and "KX-4417" not in page.text.replace(" ", "")


def test_stamp_on_a_real_report_is_read() -> None:
    pages = parse("inventory.pdf", (DOCS / "SPARSE-2024-INV-1234_borderless_table.pdf").read_bytes())
    stamp = next(line for line in pages[1].text.splitlines() if line.startswith("[image] "))
    assert "AUD-2024-7842" in stamp


def test_tightly_set_paper_keeps_its_words_and_numbered_heading() -> None:
    """test.pdf sets words ~0.2 em apart with no space characters; a fixed 3 pt tolerance glues them."""
    (page,) = parse("paper.pdf", (DOCS / "test.pdf").read_bytes())
    assert page.text.startswith("# 1 Introduction\n")  # "1" and "Introduction" a wide gap apart
    assert "Large language models (LLMs) are becoming a crucial building block" in _flat(page.text)
    assert "| " not in page.text  # one column of prose: no table, no gutter
