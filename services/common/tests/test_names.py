"""Knowledge base and file name rules: what becomes a path must never leave its directory."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.names import check_file_name, check_kb_name, file_name_error, kb_name_error


@pytest.mark.parametrize(
    "name", ["知识库", "kb_1", "a-b.c", "Ünïcode", "x" * 64, "v1.0", "ナレッジ", "Δοκιμή", ".hidden"]
)
def test_valid_kb_names(name: str) -> None:
    assert kb_name_error(name) is None
    assert check_kb_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 65, "limit is 64"),
        ("a b", "letters"),
        ("a/b", "letters"),
        ("..", "'..'"),
        (".", "'.'"),
        ("a..b", "'..'"),
        ("kb\x00", "letters"),
        ("kb~1", "letters"),  # "~" marks the edge backend's own directory entries
    ],
)
def test_invalid_kb_names(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        check_kb_name(name)


@pytest.mark.parametrize(
    "name", ["报告 2024.pdf", "a.txt", ".hidden.md", "x" * 251 + ".txt", "中" * 85, "می\u200cخواهم.txt"]
)
def test_valid_file_names(name: str) -> None:
    assert file_name_error(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("..", "'..'"),
        (".", "'.'"),
        ("../etc/passwd", "'/'"),
        ("a/b.txt", "'/'"),
        ("..\\windows.ini", "'/'"),
        ("a\x00.txt", "NUL"),
        ("a\nb.txt", "control"),
        ("a\r\nb.txt", "CR or LF"),
        ("invoice\x85.pdf", "control"),  # a C1 control (NEL)
        ("report\u2028.pdf", "control"),  # line separator
        ("evil\u202etxt.exe", "bidirectional"),  # shows as "evilexe.txt"
        ("\u2067name.pdf", "bidirectional"),
        ("x" * 256, "255"),
        ("中" * 86, "255"),  # 258 bytes in UTF-8
        (" a.txt", "whitespace"),
    ],
)
def test_invalid_file_names(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        check_file_name(name)
