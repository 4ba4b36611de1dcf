from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.retrieve.names import validate_collection_name


@pytest.mark.parametrize(
    "name", ["kb", "知识库", "ナレッジ", "지식", "kb_1-v2.0", ".hidden", "a.b", "x" * 64, "Δοκιμή"]
)
def test_accepts_safe_names(name: str) -> None:
    assert validate_collection_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("x" * 65, "longer than 64"),
        ("../etc", "forbidden"),
        ("a/b", "forbidden characters '/'"),
        ("a\\b", "forbidden"),
        ("a b", "forbidden"),
        ("tab\there", "forbidden"),
        ("nul\x00", "forbidden"),
        ("kb~1", "forbidden"),  # '~' marks the edge backend's own entries
        ("..", "'..'"),
        (".", "'.'"),
        ("a..b", "'..'"),
    ],
)
def test_rejects_unsafe_names(name: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match="collection name") as caught:
        validate_collection_name(name)
    assert fragment in str(caught.value)
