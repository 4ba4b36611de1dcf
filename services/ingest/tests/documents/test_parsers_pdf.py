"""PDFs (text layer, scanned pages through OCR, encrypted, truncated, too long) and images."""

from __future__ import annotations

import io

import pypdf
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.ingest.documents.parsers import ParseError, ParseLimits, parse
from services.ingest.documents.parsers import ocr as ocr_module
from services.ingest.documents.parsers.pdf_tables import usable_rows
from services.ingest.tests.conftest import DOCS

SCANNED_LINES = ["Quarterly revenue grew 42 percent", "Zhiku reads scanned pages"]


def _page_image(lines: list[str]) -> Image.Image:
    image = Image.new("RGB", (1000, 100 + 110 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    for number, line in enumerate(lines):
        draw.text((40, 50 + 110 * number), line, fill="black", font=font)
    return image


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_text_layer_pages_are_not_ocred() -> None:
    segments = parse("invoice.pdf", (DOCS / "REPAIR-2022-INV-001_multipage.pdf").read_bytes())
    assert [s.metadata for s in segments] == [{"page": "1"}, {"page": "2"}, {"page": "3"}]
    assert "Insured name Gabriel Diaz" in segments[0].text
    assert "Insured name Bruce Wayne" in segments[1].text


def test_ruled_pdf_table_becomes_markdown_rows_in_place() -> None:
    pages = parse("report.pdf", (DOCS / "SPARSE-2024-INV-1234_borderless_table.pdf").read_bytes())
    lines = pages[1].text.splitlines()
    header = lines.index("| Product Code | Category | Unit Cost | Total Value | Last Audit | Notes |")
    assert lines[header + 1] == "| --- | --- | --- | --- | --- | --- |"
    assert "| SKU-9201 | Hardware | $32.50 | $25,285.00 | 2024-10-22 | Verified |" in lines
    # Reading order kept: the caption above, the recommendations below; rows not repeated as text.
    assert lines[header - 2] == "## Extended Inventory Review:"
    assert lines.index("## Recommendations:") > header
    assert "SKU-9201 Hardware $32.50" not in pages[1].text


def test_form_boxes_stay_text_and_the_totals_grid_becomes_a_table() -> None:
    pages = parse("invoice.pdf", (DOCS / "REPAIR-2022-INV-001_multipage.pdf").read_bytes())
    lines = pages[0].text.splitlines()
    # Bold labels beside plain values are a form, not a table with a header row.
    assert "Insured name Gabriel Diaz Year 2022" in lines
    assert not any(line.startswith("| Insured name") for line in lines)
    # The estimate grid: row labels in an unnamed stub column, figures under their header.
    header = lines.index("|  | Hours | Rate | Cost |")
    assert "| Body Labor | 2 | 150 | 300 |" in lines[header:]
    assert "| GRAND TOTAL |  |  | 5,738 |" in lines[header:]


def test_scanned_page_goes_through_ocr() -> None:
    pdf = _encoded(_page_image(SCANNED_LINES), "PDF")  # an image-only page: no text layer
    (segment,) = parse("scan.pdf", pdf)
    assert segment.metadata == {"page": "1", "ocr": "true"}
    words = segment.text.lower()
    for word in ("quarterly", "revenue", "percent", "zhiku", "scanned", "pages"):
        assert word in words, segment.text
    # Reading order: the first drawn line comes first.
    assert words.index("revenue") < words.index("zhiku")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_images_go_through_ocr(fmt: str) -> None:
    (segment,) = parse(f"photo.{fmt.lower()}", _encoded(_page_image(SCANNED_LINES[1:]), fmt))
    assert segment.metadata == {"ocr": "true"}
    assert "scanned" in segment.text.lower()


def test_ocr_engine_loads_once_per_process() -> None:
    parse("a.png", _encoded(_page_image(["first image"]), "PNG"))
    parse("b.png", _encoded(_page_image(["second image"]), "PNG"))
    assert ocr_module._engine.cache_info().currsize == 1
    assert ocr_module._engine() is ocr_module._engine()


def test_blank_image_has_no_text() -> None:
    with pytest.raises(ParseError, match=r"blank\.png: no text found in the image"):
        parse("blank.png", _encoded(Image.new("RGB", (200, 100), "white"), "PNG"))


def test_corrupt_image_is_named() -> None:
    with pytest.raises(ParseError, match=r"broken\.jpg: not a readable image"):
        parse("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")


def test_oversized_image_is_refused_before_decoding() -> None:
    data = _encoded(Image.new("RGB", (400, 300), "white"), "PNG")
    with pytest.raises(ParseError, match=r"big\.png: image too large \(400x300 pixels, limit 1000\)"):
        parse("big.png", data, limits=ParseLimits(image_max_pixels=1000))


def test_encrypted_pdf_says_so() -> None:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO((DOCS / "test.pdf").read_bytes()))
    writer.encrypt(user_password="secret", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(ParseError, match=r"secret\.pdf: the PDF is encrypted \(password-protected\)"):
        parse("secret.pdf", buffer.getvalue())


def test_truncated_pdf_fails_cleanly() -> None:
    data = (DOCS / "test.pdf").read_bytes()
    with pytest.raises(ParseError, match=r"cut\.pdf: "):
        parse("cut.pdf", data[: len(data) // 3])


def test_too_many_pages_is_refused() -> None:
    data = (DOCS / "REPAIR-2022-INV-001_multipage.pdf").read_bytes()
    with pytest.raises(ParseError, match=r"long\.pdf: too many pages \(3, limit 2\)"):
        parse("long.pdf", data, limits=ParseLimits(max_pages=2))


@pytest.mark.parametrize(
    ("cells", "usable"),
    [
        ([["城市", "人口"], ["上海", "2487万"]], True),
        ([["城市", None], ["上海", "2487万"]], False),  # one header cell: a box with a caption
        ([["only one column"], ["row"]], False),
        ([["a", "b"]], False),  # a header without rows
        ([["a", "b"], ["line 1\nline 2", "x\ny"], ["p\nq", "r\ns"]], False),  # layout boxes
    ],
)
def test_table_filter(cells: list[list[str | None]], usable: bool) -> None:
    assert (usable_rows(cells) is not None) is usable


def _numbered_footer(paragraph) -> None:
    """A PAGE field, as Word and LibreOffice write page numbers."""
    from docx.oxml import parse_xml

    field = (
        '<w:fldSimple xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" w:instr="PAGE"/>'
    )
    paragraph.add_run("第 ")
    paragraph._p.append(parse_xml(field))
    paragraph.add_run(" 页")


def test_running_headers_footers_and_page_numbers_are_kept_once(tmp_path) -> None:
    """A four-page report written by LibreOffice with a header and a numbered footer on every page."""
    import docx
    from docx.enum.text import WD_BREAK

    from services.ingest.documents.parsers import parse
    from testing.office_files import written_by_libreoffice

    document = docx.Document()
    section = document.sections[0]
    section.header.paragraphs[0].text = "知库科技 内部资料 请勿外传"
    _numbered_footer(section.footer.paragraphs[0])
    bodies = [f"第{n}章的正文：本季度第{n}项指标完成率为{90 + n}%。" for n in range(1, 5)]
    for n, body in enumerate(bodies):
        paragraph = document.add_paragraph(body)
        if n < len(bodies) - 1:
            paragraph.add_run().add_break(WD_BREAK.PAGE)
    source = tmp_path / "report.docx"
    document.save(source)
    pages = parse("report.pdf", written_by_libreoffice(source, "pdf"))
    assert [page.metadata["page"] for page in pages] == ["1", "2", "3", "4"]
    texts = ["".join(page.text.split()) for page in pages]  # PDF text layers space out CJK and digits
    for text, body in zip(texts, bodies, strict=True):
        assert body in text  # the body, alike on every page but in the middle, is untouched
    assert texts[0].startswith("知库科技内部资料请勿外传") and texts[0].endswith("第1页")  # kept once
    assert texts[1:] == bodies[1:]  # header and numbered footer gone from the other pages


def test_running_line_detection_leaves_table_rows_and_middles_alone() -> None:
    from services.ingest.documents.parsers.base import Segment
    from services.ingest.documents.parsers.pdf_running import drop_running_lines

    pages = [
        Segment(
            f"ACME Corp annual report\n| Item | Cost |\n| --- | --- |\n| x{n} | {n} |\n"
            f"repeated middle\nmore {n}\nPage {n} of 3",
            {"page": str(n)},
        )
        for n in range(1, 4)
    ]
    cleaned = drop_running_lines(pages)
    assert cleaned[0].text.startswith("ACME Corp annual report") and cleaned[0].text.endswith("Page 1 of 3")
    for page in cleaned[1:]:
        assert "ACME" not in page.text and "of 3" not in page.text
        assert page.text.startswith("| Item | Cost |") and "repeated middle" in page.text
    # Two pages are too few to call anything running.
    assert drop_running_lines(pages[:2]) == pages[:2]
