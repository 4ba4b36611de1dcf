"""Parsers on the real evaluation files, on text in Chinese encodings, and on garbage."""

from __future__ import annotations

import io
import random

import docx
import pytest

from services.ingest.parsers import ParseError, parse
from services.ingest.tests.conftest import DOCS

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
    text = _text(parse("test.docx", (DOCS / "test.docx").read_bytes()))
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
        ("noext", b"hello", "noext: unsupported file type without an extension"),
    ],
)
def test_broken_files_fail_with_the_file_name_and_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse(name, data)
