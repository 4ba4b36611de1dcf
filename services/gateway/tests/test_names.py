"""The knowledge-base and file name rules that keep names from addressing anything else."""

from __future__ import annotations

import pytest

from services.gateway.names import file_name_error, kb_name_error, upload_file_name


@pytest.mark.parametrize("name", ["handbook", "员工手册", "v1.2-final_draft", "a", "x" * 64, "知识库_2024"])
def test_valid_knowledge_base_names(name: str) -> None:
    assert kb_name_error(name) is None


@pytest.mark.parametrize(
    "name", ["", "..", ".", "a..b", "a/b", "../etc", "a b", "x" * 65, "a\\b", "name\n", "semi;colon"]
)
def test_invalid_knowledge_base_names(name: str) -> None:
    assert kb_name_error(name) is not None


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\me\\报告.docx", "报告.docx"),
        ("/home/me/notes.md", "notes.md"),
        ("  spaced name.txt ", "spaced name.txt"),
    ],
)
def test_upload_names_keep_only_the_base_name(raw: str, stored: str) -> None:
    assert upload_file_name(raw) == stored


@pytest.mark.parametrize("raw", [None, "", "..", "dir/..", "a\x00b.txt", "x" * 256])
def test_upload_names_that_cannot_be_stored(raw: str | None) -> None:
    with pytest.raises(ValueError):
        upload_file_name(raw)


def test_file_name_rule_refuses_separators() -> None:
    assert file_name_error("a/b.txt") is not None
    assert file_name_error("a.txt") is None
