"""Parent-child splitting: children inside bounded parents, heading paths kept, tables whole."""

from __future__ import annotations

import pytest

from services.ingest.documents.parent_child import check_parent_size, split_parent_child
from services.ingest.documents.parsers import Segment
from services.ingest.documents.splitter import TextChunk

SECTION_A = "".join(f"甲节第{i}句说明员工请假需要提前三天在系统里提交申请。" for i in range(30))
SECTION_B = " ".join(f"Sentence {i} of section B explains how expenses are approved." for i in range(25))
DOCUMENT = f"# 员工手册\n\n## 请假\n\n{SECTION_A}\n\n## Expenses\n\n{SECTION_B}\n"


def _split(
    parent: int = 600, child: int = 120, overlap: int = 20, splitter: str = "recursive"
) -> list[TextChunk]:
    return split_parent_child(
        [Segment(DOCUMENT, {})], "handbook.md", child, overlap, parent, splitter=splitter
    )


def test_children_lie_within_parents_that_are_bounded() -> None:
    children = _split()
    parents = {c.parent_index: c.parent_text for c in children}
    assert len(parents) >= 4  # both sections are longer than one parent
    assert all(len(text) <= 600 for text in parents.values())
    for child in children:
        assert len(child.text) <= 120
        assert child.text in child.parent_text
    # Children are numbered over the file; every parent's text is covered by its children.
    assert [c.index for c in children] == list(range(len(children)))
    for index, text in parents.items():
        sentences = [s.strip() for s in text.split("。") if s.strip().startswith("甲节")]
        joined = "".join(c.text for c in children if c.parent_index == index)
        assert all(s in joined for s in sentences)


def test_parents_do_not_overlap_and_cover_the_text() -> None:
    parents = list(dict.fromkeys(c.parent_text for c in _split()))
    for sentence in ("甲节第0句", "甲节第29句", "Sentence 0 of section B", "Sentence 24 of section B"):
        assert sum(sentence in text for text in parents) == 1, sentence


def test_children_keep_their_parents_heading_path() -> None:
    children = _split(splitter="markdown")
    by_heading = {c.metadata.get("heading") for c in children}
    assert by_heading == {"员工手册 > 请假", "员工手册 > Expenses"}
    for child in children:
        if "甲节" in child.text:
            assert child.metadata["heading"] == "员工手册 > 请假"
        if "section B" in child.text:
            assert child.metadata["heading"] == "员工手册 > Expenses"
        assert child.metadata["chunk_index"] == str(child.index)
        assert child.metadata["parent_index"] == str(child.parent_index)


def test_table_children_repeat_the_header_row() -> None:
    rows = "\n".join(f"| item {i} | {i * 10} yuan |" for i in range(40))
    table = f"# Prices\n\n| Item | Price |\n|---|---|\n{rows}\n"
    children = split_parent_child([Segment(table, {})], "prices.md", 100, 0, 400)
    assert len(children) > 4
    assert all("| Item | Price |\n|---|---|\n| item" in c.text for c in children)
    assert all(c.metadata["heading"] == "Prices" for c in children)
    assert all(len(c.parent_text) <= 400 for c in children)


@pytest.mark.parametrize(
    ("parent", "child", "message"),
    [
        (50, 20, "between 100 and 8000"),
        (9000, 200, "between 100 and 8000"),
        (200, 250, "larger than chunk_size"),
    ],
)
def test_bad_parent_sizes_are_refused(parent: int, child: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_parent_size(parent, child)
