"""Parsers on the real evaluation files (read in place), small generated files, and garbage."""

from __future__ import annotations

import io
import random

import docx
import pytest

from services.ingest.documents.parsers import ParseError, ParseLimits, parse
from services.ingest.tests.conftest import DOCS

# OCR of pictures inside documents has its own tests; elsewhere it would only cost time.
NO_PICTURES = ParseLimits(embedded_images=0)

GBK_TEXT = (
    "知识库问答系统先把文档切分成小块，再用向量模型为每一块编码。"
    "用户提问时，系统检索最相关的段落，并把它们交给大语言模型生成答案。"
    "中文文本常见的编码除了 UTF-8 之外，还有 GBK 和 GB18030。"
)


def _text(segments) -> str:
    return "\n".join(segment.text for segment in segments)


def test_pdf_text_layer_with_page_numbers() -> None:
    segments = parse("test.pdf", (DOCS / "test.pdf").read_bytes())
    assert [segment.metadata["page"] for segment in segments] == ["1"]
    text = _text(segments)
    assert "Large language models (LLMs) are becoming a crucial building block" in text
    assert "AutoGen provides ready-to-use implementations" in text


def test_multipage_pdf_keeps_each_page_number() -> None:
    segments = parse("invoice.pdf", (DOCS / "REPAIR-2022-INV-001_multipage.pdf").read_bytes())
    assert [segment.metadata["page"] for segment in segments] == ["1", "2", "3"]


def test_docx_paragraphs_and_tables_as_markdown_rows() -> None:
    text = _text(parse("test.docx", (DOCS / "test.docx").read_bytes(), limits=NO_PICTURES))
    assert "AutoGen: Enabling Next-Gen LLM Applications via Multi-Agent Conversation" in text
    assert (
        "Here is a random UUID in the middle of the paragraph! 314b0a30-5b04-470b-b9f7-eed2c2bec74a" in text
    )
    assert "| 13 | 14 | 49e168b7-d2ae-407f-a055-2167576f39a1 | 15 | 16 | 17 |" in text
    assert "| --- | --- | --- | --- | --- | --- |" in text


def test_docx_headings_become_markdown_headings() -> None:
    document = docx.Document()
    document.add_heading("第一章 总则", level=1)
    document.add_paragraph("本制度适用于全体员工。")
    buffer = io.BytesIO()
    document.save(buffer)
    text = _text(parse("制度.docx", buffer.getvalue()))
    assert text.startswith("# 第一章 总则")
    assert "本制度适用于全体员工。" in text


def test_html_text_without_scripts_and_styles() -> None:
    raw = (DOCS / "test_blog.html").read_bytes()
    (segment,) = parse("test_blog.html", raw)
    assert "Does Model and Inference Parameter Matter in LLM Applications?" in segment.metadata["title"]
    assert "the tuned gpt-3.5-turbo model vastly outperformed untuned gpt-4 in accuracy" in segment.text
    # Inline links flow into their sentence instead of breaking it into lines.
    assert "Read this blog for an overview of updates" in segment.text
    script = 'document.documentElement.setAttribute("data-theme"'
    assert script in raw.decode("utf-8")
    assert script not in segment.text and "<script" not in segment.text


def test_html_drops_script_and_style_content() -> None:
    html = (
        "<html><head><style>p{color:red}</style></head>"
        "<body><p>正文<b>加粗</b>内容</p><script>alert(1)</script></body></html>"
    )
    (segment,) = parse("page.htm", html.encode("utf-8"))
    assert segment.text == "正文加粗内容"


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-16", "utf-8", "utf-8-sig"])
def test_chinese_text_in_common_encodings(encoding: str) -> None:
    (segment,) = parse("说明.txt", GBK_TEXT.encode(encoding))
    assert segment.text == GBK_TEXT


def test_markdown_is_text() -> None:
    (segment,) = parse("README.md", "# 标题\n\n正文。\r\n".encode())
    assert segment.text == "# 标题\n\n正文。"


def test_random_bin_is_an_unsupported_type() -> None:
    with pytest.raises(ParseError, match=r"random\.bin: unsupported file type '\.bin'"):
        parse("random.bin", (DOCS / "random.bin").read_bytes())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_garbage_named_txt_is_not_text(seed: int) -> None:
    rng = random.Random(seed)
    garbage = bytes(rng.getrandbits(8) for _ in range(4096))
    with pytest.raises(ParseError, match=r"garbage\.txt: not a text file"):
        parse("garbage.txt", garbage)


def test_random_bin_renamed_to_txt_is_not_text() -> None:
    with pytest.raises(ParseError, match="not a text file"):
        parse("random.txt", (DOCS / "random.bin").read_bytes())


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "broken.pdf: "),
        ("broken.docx", b"PK\x03\x04 not a zip", "broken.docx: not a readable .docx"),
        ("empty.txt", b"", "empty.txt: the file is empty"),
        ("blank.txt", b"  \n\n \t ", "blank.txt: no text found"),
        ("noext", b"\x00\x01\x02\xff" * 64, "noext: unsupported file type without an extension"),
    ],
)
def test_broken_files_fail_with_the_file_name_and_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse(name, data)


# -- every format of the evaluation set ------------------------------------------------------


def _doc(name: str, limits: ParseLimits = NO_PICTURES):
    return parse(name, (DOCS / name).read_bytes(), limits=limits)


def test_extensionless_text_file_is_read_as_text() -> None:
    text = _text(_doc("LICENSE"))
    assert "MIT License" in text and "Permission is hereby granted, free of charge" in text


def test_pptx_one_segment_per_slide_with_title_heading_and_tables() -> None:
    segments = _doc("test.pptx")
    assert [s.metadata["page"] for s in segments] == [str(i) for i in range(1, len(segments) + 1)]
    assert segments[0].text.startswith("# AutoGen: Enabling Next-Gen LLM Applications via Multi-Agent")
    text = _text(segments)
    assert "2cdda5c8-e50e-4db4-b5f0-9722a649f455" in text
    assert "| --- |" in text  # the slide's table as Markdown rows
    chart = next(s.text for s in segments if "Chart:" in s.text)
    assert "Chart: a3f6004b-6f4f-4ea8-bee3-3741f4dc385f" in chart
    assert "| Category | Series 1 |" in chart and "| 2002 | 2002 |" in chart


@pytest.mark.parametrize("name", ["test.xlsx", "test.xls"])
def test_spreadsheets_one_markdown_table_per_sheet(name: str) -> None:
    segments = _doc(name)
    assert [s.metadata["sheet"] for s in segments] == ["Sheet1", "09060124-b5e7-4717-9d07-3c046eb"]
    lines = segments[0].text.splitlines()
    assert lines[0] == "# Sheet1"
    assert lines[2:4] == ["| Alpha | Beta | Gamma | Delta |", "| --- | --- | --- | --- |"]
    assert "| 89 | 82 | 100 | 12 |" in lines  # whole numbers without ".0"
    assert "| 58 | 6ff4173b-42a5-4784-9b19-f49caff4d93d | 22 | 9 |" in lines


def test_xls_and_xlsx_of_the_same_workbook_agree() -> None:
    assert _text(_doc("test.xls")) == _text(_doc("test.xlsx"))


def test_shift_jis_csv_becomes_a_markdown_table() -> None:
    (segment,) = _doc("test_mskanji.csv")
    assert segment.text.splitlines() == [
        "| 名前 | 年齢 | 住所 |",
        "| --- | --- | --- |",
        "| 佐藤太郎 | 30 | 東京 |",
        "| 三木英子 | 25 | 大阪 |",
        "| 髙橋淳 | 35 | 名古屋 |",
    ]


def test_tsv_uses_tabs() -> None:
    (segment,) = parse("data.tsv", "城市\t人口\n上海\t2487万\n".encode())
    assert segment.text.splitlines()[2] == "| 上海 | 2487万 |"


def test_json_keeps_keys_next_to_values() -> None:
    lines = _text(_doc("test.json")).splitlines()
    assert "key1: string_value" in lines
    assert "key3[1]: list_value2" in lines
    assert "uuid_value: 9700dc99-6685-40b4-9a3a-5e406dcb37f3" in lines
    assert "5b64c88c-b3c3-4510-bcb8-da0b200602d8: uuid_key" in lines


def test_jsonl_one_paragraph_per_record_and_bad_lines_named() -> None:
    (segment,) = parse("rows.jsonl", '{"q": "年假几天？", "a": 5}\n\n{"q": "病假", "ok": true}\n'.encode())
    assert segment.text == "q: 年假几天？\na: 5\n\nq: 病假\nok: true"
    with pytest.raises(ParseError, match=r"rows\.jsonl: invalid JSON on line 2"):
        parse("rows.jsonl", b'{"a": 1}\n{"a": \n')


def test_notebook_markdown_code_and_outputs() -> None:
    text = _text(_doc("test_notebook.ipynb"))
    assert text.startswith("# Test Notebook")
    assert '```python\nprint("markitdown")\n```' in text
    assert "Output:\n42" in text
    assert "## Code Cell Below" in text


def test_epub_chapters_in_spine_order() -> None:
    segments = _doc("test.epub")
    assert [s.metadata["chapter"] for s in segments] == ["1", "2"]
    assert segments[0].text.startswith("# Chapter 1: Test Content")
    assert "This is a blockquote for testing." in segments[1].text


def test_outlook_msg_headers_and_body() -> None:
    (segment,) = _doc("test_outlook_msg.msg")
    assert segment.metadata["title"] == "Test Email Message"
    assert segment.text.startswith("# Test Email Message")
    assert "From: M. C. Kurtuluş <muratcan.kurtulus@gmail.com>" in segment.text
    assert "This is the body of the test email message" in segment.text
    assert "Cc:" not in segment.text  # empty headers are left out


def test_outlook_msg_without_message_class_is_a_parse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # extract_msg opens a file of class "IPM" as a bare MSGFile, which has no body or headers.
    import extract_msg

    class BareMsg:
        classType = "IPM"

        def close(self) -> None:
            pass

    monkeypatch.setattr(extract_msg, "openMsg", lambda data, **kwargs: BareMsg())
    with pytest.raises(ParseError, match=r"note\.msg: an Outlook \.msg file of class 'IPM', not a message"):
        parse("note.msg", b"ignored")


def test_eml_prefers_plain_text_and_lists_attachments() -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "季度报告"
    message["From"] = "张三 <zhang@example.com>"
    message["To"] = "li@example.com"
    message.set_content("请查收本季度的销售报告。")
    message.add_alternative("<p>请查收<b>本季度</b>的销售报告。</p>", subtype="html")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="report.pdf")
    (segment,) = parse("mail.eml", message.as_bytes())
    assert segment.text.startswith("# 季度报告")
    assert "From: 张三 <zhang@example.com>" in segment.text
    assert "请查收本季度的销售报告。" in segment.text
    assert "Attachments: report.pdf" in segment.text


def test_html_only_eml_is_converted() -> None:
    raw = (
        b"Subject: Hi\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<h1>Menu</h1><p>Noodles <i>today</i></p>"
    )
    (segment,) = parse("html.eml", raw)
    assert "# Menu" in segment.text and "Noodles today" in segment.text


def test_rss_feed_items_as_headings_with_dates() -> None:
    (segment,) = _doc("test_rss.xml")
    assert segment.text.startswith("# The Official Microsoft Blog")
    assert "## Ignite 2024: Why nearly 70% of the Fortune 500 now use Microsoft 365 Copilot" in segment.text
    assert "Tue, 19 Nov 2024 13:30:02 +0000" in segment.text
    assert "<p>" not in segment.text  # item HTML is converted to text


def test_xml_entities_are_not_expanded() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>hi &x;</d>'
    (segment,) = parse("evil.xml", evil)
    assert "root:" not in segment.text and "hi" in segment.text


def test_html_headings_and_tables_as_markdown() -> None:
    html = (
        "<html><body><h1>员工手册</h1><h2>假期</h2><p>年假按工龄计算。</p>"
        "<table><tr><th>工龄</th><th>天数</th></tr><tr><td>1-10年</td><td>5</td></tr></table>"
        "</body></html>"
    )
    (segment,) = parse("handbook.html", html.encode())
    lines = [line for line in segment.text.splitlines() if line]
    assert lines[:3] == ["# 员工手册", "## 假期", "年假按工龄计算。"]
    assert "| 工龄 | 天数 |" in lines and "| 1-10年 | 5 |" in lines


def test_wikipedia_page_keeps_infobox_rows() -> None:
    (segment,) = _doc("test_wikipedia.html")
    assert segment.metadata["title"] == "Microsoft - Wikipedia"
    assert "# Microsoft" in segment.text.splitlines()
    assert "Microsoft entered the operating system (OS) business in 1980" in segment.text


def _picture(text: str) -> io.BytesIO:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (640, 110), "white")
    ImageDraw.Draw(image).text((20, 25), text, fill="black", font=ImageFont.load_default(size=44))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def test_pictures_in_slides_are_ocred_in_place() -> None:
    """A generated deck (tests/e2e finds the real test.pptx's picture text through search)."""
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = "Strings in the picture"
    slide.shapes.add_picture(_picture("Quarterly sales report"), Inches(1), Inches(2))
    buffer = io.BytesIO()
    deck.save(buffer)
    (segment,) = parse("deck.pptx", buffer.getvalue())
    assert segment.text.startswith("# Strings in the picture\n\n[image] ")
    assert "quarterly sales report" in segment.text.lower()


def test_pictures_in_docx_are_ocred_where_they_stand_up_to_the_cap() -> None:
    document = docx.Document()
    document.add_paragraph("Before the pictures.")
    document.add_picture(_picture("Invoice number 4711"))
    document.add_paragraph("Between the pictures.")
    document.add_picture(_picture("Second picture text"))
    buffer = io.BytesIO()
    document.save(buffer)
    (segment,) = parse("pictures.docx", buffer.getvalue(), limits=ParseLimits(embedded_images=1))
    lines = segment.text.split("\n\n")
    assert lines[:3] == ["Before the pictures.", "[image] Invoice number 4711", "Between the pictures."]
    assert segment.text.count("[image]") == 1  # the cap: the second picture is not OCRed
    (without,) = parse("pictures.docx", buffer.getvalue(), limits=NO_PICTURES)
    assert "[image]" not in without.text


def test_docx_comments_are_kept() -> None:
    text = _text(_doc("test_with_comment.docx"))
    assert text.endswith(
        "Comments:\n- This is a test comment. 12df-321a\n- Yet another comment in the doc. 55yiyi-asd09"
    )
    assert "Comments:" not in _text(_doc("test.docx"))


def test_docx_equations_keep_their_text() -> None:
    text = _text(_doc("equations.docx"))
    assert "The angle is θ=sin-1⁡2.2×10-4=2.2×10-4rad." in text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pptx", b"PK\x03\x04 not a zip", "broken.pptx: not a readable .pptx"),
        ("broken.xlsx", b"not a workbook", "broken.xlsx: not a readable .xlsx"),
        ("broken.xls", b"\xd0\xcf\x11\xe0 truncated", "broken.xls: not a readable .xls"),
        ("broken.msg", b"not an ole file", "broken.msg: not a readable Outlook .msg"),
        ("broken.epub", b"PK\x03\x04", "broken.epub: not a readable EPUB"),
        ("broken.json", b'{"a": ', r"broken.json: invalid JSON"),
        ("broken.ipynb", b'{"nbformat": 4}', "broken.ipynb: not a Jupyter notebook"),
        ("broken.xml", b"<a><b></a>", "broken.xml: invalid XML"),
        ("broken.csv", b'a,b\n"unterminated\x00', "broken.csv: "),
    ],
)
def test_corrupt_files_of_each_format_name_file_and_problem(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse(name, data)


@pytest.mark.parametrize("name", ["test.docx", "test.pptx", "test.xlsx", "test.epub"])
def test_truncated_office_files_fail_cleanly(name: str) -> None:
    data = (DOCS / name).read_bytes()
    with pytest.raises(ParseError, match=name.replace(".", r"\.") + ": "):
        parse(name, data[: len(data) // 2])


def test_wrong_extension_fails_with_the_format_it_expected_and_what_it_looks_like() -> None:
    with pytest.raises(ParseError, match=r"report\.docx: not a readable \.docx.*looks like a PDF document"):
        parse("report.docx", (DOCS / "test.pdf").read_bytes())
    with pytest.raises(ParseError, match=r"notes\.txt: not a text file .*looks like a zip container"):
        parse("notes.txt", (DOCS / "test.docx").read_bytes())
    with pytest.raises(ParseError, match=r"sheet\.xlsx: not a readable \.xlsx .*looks like an OLE2 file"):
        parse("sheet.xlsx", (DOCS / "test.xls").read_bytes())
