"""Heading paths, the Markdown splitter, tables kept under their header, title enhancement."""

from __future__ import annotations

import pytest

from services.ingest.documents.outline import Outline
from services.ingest.documents.parsers import Segment, parse
from services.ingest.documents.splitter import split_segments
from services.ingest.documents.title_enhance import is_possible_title, with_title
from services.ingest.tests.conftest import DOCS

HANDBOOK = """# 员工手册

本手册适用于全体员工。

## 第一章 假期

### 年假

员工工作满一年后享有五天带薪年假。年假需提前三天在系统中申请，经直属主管批准后生效。

### 病假

病假需提供医院证明。

## 第二章 报销

差旅费用在出差结束后十个工作日内报销。

```python
# 这不是标题
print("code")
```
"""


def _chunks(text: str, **options):
    return split_segments([Segment(text)], "手册.md", 60, 10, **options)


def test_outline_builds_nested_heading_paths_and_ignores_code() -> None:
    outline = Outline(HANDBOOK)
    assert [h.path for h in outline.headings] == [
        ("员工手册",),
        ("员工手册", "第一章 假期"),
        ("员工手册", "第一章 假期", "年假"),
        ("员工手册", "第一章 假期", "病假"),
        ("员工手册", "第二章 报销"),
    ]
    assert outline.path_at(HANDBOOK.index("病假需")) == ("员工手册", "第一章 假期", "病假")
    assert outline.path_at(0) == ("员工手册",)


@pytest.mark.parametrize("splitter", ["recursive", "markdown"])
def test_every_chunk_carries_file_index_and_heading_path(splitter: str) -> None:
    chunks = _chunks(HANDBOOK, splitter=splitter)
    assert [c.metadata["chunk_index"] for c in chunks] == [str(i) for i in range(len(chunks))]
    assert all(c.metadata["file"] == "手册.md" for c in chunks)
    annual = next(c for c in chunks if "五天带薪年假" in c.text)
    assert annual.metadata["heading"] == "员工手册 > 第一章 假期 > 年假"
    travel = next(c for c in chunks if "差旅费用" in c.text)
    assert travel.metadata["heading"] == "员工手册 > 第二章 报销"
    if splitter == "markdown":
        sick = next(c for c in chunks if "病假需提供医院证明" in c.text)
        assert sick.metadata["heading"] == "员工手册 > 第一章 假期 > 病假"


def test_a_recursive_chunk_spanning_sections_is_labelled_by_where_most_of_it_is() -> None:
    text = "# 甲\n\n" + "短。" + "\n\n# 乙\n\n" + "长" * 30 + "。"
    (chunk,) = split_segments([Segment(text)], "f.md", 100, 0)
    assert chunk.metadata["heading"] == "乙"
    (chunk,) = split_segments([Segment(text.replace("短。", "短" * 40 + "。"))], "f.md", 100, 0)
    assert chunk.metadata["heading"] == "甲"


def test_markdown_splitter_never_mixes_sections() -> None:
    chunks = _chunks(HANDBOOK, splitter="markdown")
    for chunk in chunks:
        headings = [line for line in chunk.text.splitlines() if line.startswith("#") and " " in line]
        assert len([h for h in headings if not h.startswith("# 这")]) <= 2, chunk.text
    annual = next(c for c in chunks if "五天带薪年假" in c.text)
    assert "病假" not in annual.text
    # A heading with no text of its own opens the next section instead of standing alone.
    assert not any(c.text == "## 第一章 假期" for c in chunks)
    assert any(c.text.startswith("## 第一章 假期\n\n### 年假") for c in chunks)


def test_recursive_splitter_may_cross_sections_markdown_does_not() -> None:
    text = "# A\n\n" + "甲" * 20 + "。\n\n# B\n\n" + "乙" * 20 + "。"
    recursive = split_segments([Segment(text)], "f.md", 100, 0)
    markdown = split_segments([Segment(text)], "f.md", 100, 0, splitter="markdown")
    assert len(recursive) == 1 and recursive[0].metadata["heading"] in ("A", "B")
    assert [c.metadata["heading"] for c in markdown] == ["A", "B"]


def test_unknown_splitter_is_a_clear_value_error() -> None:
    with pytest.raises(
        ValueError, match=r"unknown splitter 'semantic' \(choose one of: markdown, recursive\)"
    ):
        split_segments([Segment("x")], "f.txt", 100, 0, splitter="semantic")


def test_headings_carry_across_pages_but_not_across_zip_members() -> None:
    segments = [
        Segment("# 总则\n\n第一页内容。", {"page": "1"}),
        Segment("第二页内容。", {"page": "2"}),
        Segment("另一个文件。", {"member": "other.txt"}),
    ]
    chunks = split_segments(segments, "a.pdf", 100, 0)
    assert [c.metadata.get("heading") for c in chunks] == ["总则", "总则", None]
    assert chunks[1].metadata["page"] == "2"


def test_long_table_chunks_repeat_the_header_row() -> None:
    header = "| 城市 | 人口 | 面积 |\n| --- | --- | --- |"
    rows = [f"| 城市{i:02d} | {i * 100}万 | {i * 10}平方公里 |" for i in range(40)]
    text = "## 人口统计\n\n" + header + "\n" + "\n".join(rows) + "\n\n表后的说明文字。"
    chunks = split_segments([Segment(text)], "stats.md", 120, 20)
    table_chunks = [c for c in chunks if "| 城市" in c.text]
    assert len(table_chunks) > 3
    for chunk in table_chunks:
        assert chunk.text.count("| 城市 | 人口 | 面积 |") == 1
        assert "| --- | --- | --- |" in chunk.text
        assert len(chunk.text) <= 120
    # Every row is in exactly one chunk; the short heading opens the first table chunk.
    for row in rows:
        assert sum(row in c.text for c in table_chunks) == 1
    assert table_chunks[0].text.startswith("## 人口统计\n\n| 城市 | 人口 | 面积 |")
    assert chunks[-1].text == "表后的说明文字。"


def test_spreadsheet_chunks_each_have_the_columns() -> None:
    chunks = split_segments(parse("test.xlsx", (DOCS / "test.xlsx").read_bytes()), "test.xlsx", 250, 50)
    sheet1 = [c for c in chunks if c.metadata["sheet"] == "Sheet1"]
    assert len(sheet1) > 1
    assert all("| Alpha | Beta | Gamma | Delta |" in c.text for c in sheet1)
    assert all(c.metadata["heading"] == "Sheet1" for c in sheet1)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 Introduction", True),
        ("3.2 年假申请", True),
        ("第三章 报销制度", True),
        ("一、总则", True),
        ("Introduction", False),  # no number: too many false positives in running text
        ("员工工作满一年后享有五天带薪年假，需提前三天申请。", False),  # a sentence
        ("2024年12月", False),  # mostly digits
        ("1. 请在系统中提交。", False),  # ends with punctuation
        ("", False),
    ],
)
def test_title_heuristic(line: str, expected: bool) -> None:
    assert is_possible_title(line) is expected


def test_title_enhancement_prefixes_plain_text_titles() -> None:
    text = (
        "1 总则\n本制度适用于全体员工。员工应遵守公司规定，按时上下班。\n"
        "2 假期\n年假五天，需提前三天申请，经主管批准。"
    )
    plain = split_segments([Segment(text)], "制度.txt", 30, 0)
    enhanced = split_segments([Segment(text)], "制度.txt", 30, 0, title_enhance=True)
    assert "heading" not in plain[-1].metadata
    last = enhanced[-1]
    assert last.metadata["heading"] == "2 假期"
    assert last.text.startswith("2 假期\n") and "经主管批准" in last.text
    # A chunk that already starts with its title is not prefixed twice.
    assert all(not c.text.startswith("1 总则\n1 总则") for c in enhanced)


def test_title_enhancement_on_markdown_uses_the_heading_path() -> None:
    chunks = _chunks(HANDBOOK, splitter="markdown", title_enhance=True)
    sick = next(c for c in chunks if "病假需提供医院证明" in c.text)
    assert sick.text.startswith("员工手册 > 第一章 假期\n### 病假")
    assert with_title("正文", ()) == "正文"
    assert with_title("## B\n正文", ("A", "B")) == "A\n## B\n正文"


def test_pdf_chunks_keep_page_numbers() -> None:
    segments = parse("invoice.pdf", (DOCS / "REPAIR-2022-INV-001_multipage.pdf").read_bytes())
    chunks = split_segments(segments, "invoice.pdf", 250, 50, splitter="markdown", title_enhance=True)
    assert {c.metadata["page"] for c in chunks} == {"1", "2", "3"}
    assert all(c.metadata["file"] == "invoice.pdf" for c in chunks)


def test_an_over_long_row_is_split_like_text_and_order_is_kept() -> None:
    long_row = "| " + "长" * 200 + " | 尾 |"
    text = "表一\n\n| 名称 | 值 |\n| --- | --- |\n" + long_row + "\n| 甲 | 1 |\n"
    chunks = [c.text for c in split_segments([Segment(text)], "t.md", 100, 10)]
    assert chunks[0] == "表一"
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert "".join(chunks[1:-1]).replace("\n", "").count("长") >= 200
    assert chunks[-1] == "| 名称 | 值 |\n| --- | --- |\n| 甲 | 1 |"
