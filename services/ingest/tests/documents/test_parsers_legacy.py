"""Legacy and open formats: .doc, .ppt, .wps, .dps (LibreOffice, antiword), .rtf, .odt, .ods, .odp.

The legacy files are made by the real LibreOffice from the evaluation set's .docx and .pptx
(``make test`` installs it), so the conversion path is the one a worker runs; the OpenDocument
files are written with odfpy, so each structure under test (heading levels, repeated cells,
notes) is there by construction.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from odf import draw, presentation, table, text
from odf.opendocument import OpenDocumentPresentation, OpenDocumentSpreadsheet, OpenDocumentText

from services.ingest.documents.parsers import ParseError, ParseLimits, converted, parse
from services.ingest.documents.parsers.opendocument import PRESENTATION_NS
from services.ingest.tests.conftest import DOCS
from testing.office_files import written_by_libreoffice

UUID_IN_DOCX = "314b0a30-5b04-470b-b9f7-eed2c2bec74a"
SHAPE_IN_PPTX = "This is a nested shape with content in 2 shapes"
NO_PICTURES = ParseLimits(embedded_images=0)


@pytest.fixture(scope="module")
def legacy() -> dict[str, bytes]:
    """test.doc and test.ppt as LibreOffice writes them from the evaluation set's OOXML files."""
    return {
        "doc": written_by_libreoffice(DOCS / "test.docx", "doc"),
        "ppt": written_by_libreoffice(DOCS / "test.pptx", "ppt"),
    }


def _all_text(segments) -> str:
    return "\n\n".join(segment.text for segment in segments)


def test_doc_keeps_headings_and_tables_through_libreoffice(legacy: dict[str, bytes]) -> None:
    document = _all_text(parse("report.doc", legacy["doc"], limits=NO_PICTURES))
    assert UUID_IN_DOCX in document
    assert "\n# Abstract\n" in document  # the heading survives as a heading
    assert "| 13 | 14 | 49e168b7-d2ae-407f-a055-2167576f39a1 | 15 | 16 | 17 |" in document  # a table row


def test_wps_is_read_like_doc(legacy: dict[str, bytes]) -> None:
    assert UUID_IN_DOCX in _all_text(parse("report.wps", legacy["doc"], limits=NO_PICTURES))


def test_ppt_one_segment_per_slide(legacy: dict[str, bytes]) -> None:
    slides = parse("deck.ppt", legacy["ppt"], limits=NO_PICTURES)
    assert len(slides) > 1 and [s.metadata["page"] for s in slides] == [
        str(n) for n in range(1, len(slides) + 1)
    ]
    assert slides[0].text.startswith("# AutoGen")
    assert SHAPE_IN_PPTX in _all_text(slides)


def test_doc_without_libreoffice_is_read_by_antiword(legacy: dict[str, bytes], monkeypatch) -> None:
    assert shutil.which("antiword"), "antiword is part of the test environment (make test installs it)"
    monkeypatch.setattr(converted, "_soffice", lambda: None)
    assert UUID_IN_DOCX in _all_text(parse("report.doc", legacy["doc"]))


def test_without_any_converter_the_job_says_what_to_install(legacy: dict[str, bytes], monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # the module converted.py calls
    with pytest.raises(
        ParseError, match=r"deck\.ppt: reading \.ppt files needs LibreOffice.*libreoffice-impress"
    ):
        parse("deck.ppt", legacy["ppt"])


def test_a_conversion_past_its_time_limit_is_stopped(legacy: dict[str, bytes]) -> None:
    with pytest.raises(ParseError, match=r"report\.doc: conversion took longer than 0\.2 s and was stopped"):
        parse("report.doc", legacy["doc"], limits=ParseLimits(convert_timeout_s=0.2))
    leftovers = subprocess.run(["pgrep", "-f", "zhiku-convert-"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"converter processes left running: {leftovers}"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "fake.doc",
            b"plain text pretending",
            r"fake\.doc: not a legacy Office \.doc file \(no OLE2 header\)",
        ),
        ("broken.ppt", b"\xd0\xcf\x11\xe0" + b"\x00" * 600, r"broken\.ppt: LibreOffice could not convert"),
        ("broken.rtf", b"hello", r"broken\.rtf: not an RTF file"),
        ("broken.odt", b"PK\x03\x04 not a zip", r"broken\.odt: not a readable \.odt file"),
    ],
)
def test_broken_legacy_files_name_the_file_and_the_problem(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse(name, data)


def test_rtf_decodes_its_code_page_and_unicode_escapes() -> None:
    # 中文 as GBK bytes (\ansicpg936, as older Word and WPS write it) and as \u escapes.
    rtf = (
        rb"{\rtf1\ansi\ansicpg936{\fonttbl{\f0 SimSun;}}\f0 \'d6\'d0\'ce\'c4\'b1\'a8\'b8\'e6\par "
        rb"second line \u20013?\u25991?\par}"
    )
    [segment] = parse("gbk.rtf", rtf)
    assert segment.text.splitlines() == ["中文报告", "second line 中文"]


def test_rtf_saved_as_doc_is_read_as_rtf() -> None:
    [segment] = parse("saved-as.doc", rb"{\rtf1\ansi Quarterly figures\par}")
    assert segment.text == "Quarterly figures"


def _odf_bytes(document) -> bytes:
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def test_odt_headings_paragraphs_lists_and_tables() -> None:
    document = OpenDocumentText()
    document.text.addElement(text.H(outlinelevel=1, text="年度报告"))
    document.text.addElement(text.P(text="本公司成立于1998年。"))
    document.text.addElement(text.H(outlinelevel=2, text="财务"))
    items = text.List()
    item = text.ListItem()
    item.addElement(text.P(text="收入增长12%"))
    items.addElement(item)
    document.text.addElement(items)
    grid = table.Table(name="t")
    for cells in (["地区", "收入"], ["华东", "120"]):
        row = table.TableRow()
        for value in cells:
            cell = table.TableCell()
            cell.addElement(text.P(text=value))
            row.addElement(cell)
        grid.addElement(row)
    document.text.addElement(grid)
    [segment] = parse("report.odt", _odf_bytes(document))
    assert segment.text == (
        "# 年度报告\n\n本公司成立于1998年。\n\n## 财务\n\n收入增长12%\n\n"
        "| 地区 | 收入 |\n| --- | --- |\n| 华东 | 120 |"
    )


def test_ods_one_table_per_sheet_and_repeated_empty_cells_cost_nothing() -> None:
    document = OpenDocumentSpreadsheet()
    for name, rows in (("Q1", [["产品", "销量"], ["A", "10"]]), ("empty", [])):
        sheet = table.Table(name=name)
        for values in rows:
            row = table.TableRow()
            for value in values:
                cell = table.TableCell()
                cell.addElement(text.P(text=value))
                row.addElement(cell)
            # A styled but empty rest of the row, as spreadsheets write it: 16,382 repeats.
            row.addElement(table.TableCell(numbercolumnsrepeated=16382))
            sheet.addElement(row)
        sheet.addElement(table.TableRow(numberrowsrepeated=1048574))
        document.spreadsheet.addElement(sheet)
    [segment] = parse("sales.ods", _odf_bytes(document))
    assert segment.metadata == {"sheet": "Q1"}
    assert segment.text == "| 产品 | 销量 |\n| --- | --- |\n| A | 10 |"


def test_odp_one_segment_per_slide_with_title_and_notes() -> None:
    document = OpenDocumentPresentation()
    for number, (title, body, note) in enumerate(
        [("开篇", "第一页的内容", "讲者备注"), ("Results", "Revenue grew 12%", "")], start=1
    ):
        page = draw.Page(name=f"p{number}", masterpagename="")
        heading = draw.Frame()
        heading.setAttrNS(PRESENTATION_NS, "class", "title")
        box = draw.TextBox()
        box.addElement(text.P(text=title))
        heading.addElement(box)
        page.addElement(heading)
        content = draw.Frame()
        box = draw.TextBox()
        box.addElement(text.P(text=body))
        content.addElement(box)
        page.addElement(content)
        if note:
            notes = presentation.Notes()
            frame = draw.Frame()
            box = draw.TextBox()
            box.addElement(text.P(text=note))
            frame.addElement(box)
            notes.addElement(frame)
            page.addElement(notes)
        document.presentation.addElement(page)
    slides = parse("deck.odp", _odf_bytes(document))
    assert [(s.metadata, s.text) for s in slides] == [
        ({"page": "1"}, "# 开篇\n\n第一页的内容\n\nNotes: 讲者备注"),
        ({"page": "2"}, "# Results\n\nRevenue grew 12%"),
    ]
