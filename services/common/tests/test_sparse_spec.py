"""The sparse encoder's spec: the one string by which writers reproduce the retrieve service's
encoder, and by which the service tells whether a writer's vectors are its own."""

from __future__ import annotations

import pytest

from services.common.sparse import SPEC_VERSION, SparseEncoder

TEXT = "服务器返回 ZX-9041 错误码时请重启。The founders founded cities."


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"k1": 2.0, "b": 0.5, "avg_len": 80.5},
        {"k1": 0.1 + 0.2, "b": 1.0, "avg_len": 1e6},  # floats that need every digit of repr
        {"tokenizer": "jieba"},
    ],
)
def test_from_spec_builds_the_same_encoder(settings: dict) -> None:
    encoder = SparseEncoder(**settings)
    rebuilt = SparseEncoder.from_spec(encoder.spec)
    assert rebuilt.spec == encoder.spec
    assert (rebuilt.k1, rebuilt.b, rebuilt.avg_len, rebuilt.tokenizer) == (
        encoder.k1,
        encoder.b,
        encoder.avg_len,
        encoder.tokenizer,
    )
    assert rebuilt.document(TEXT) == encoder.document(TEXT)
    assert SparseEncoder.from_spec(encoder.spec) is rebuilt  # cached: built once per spec


def test_the_spec_names_every_setting_that_changes_documents() -> None:
    default = SparseEncoder()
    assert default.spec.startswith(f"{SPEC_VERSION} tokenizer=rjieba-")
    assert " k1=1.2 b=0.75 avg_len=120.0" in default.spec
    others = {
        SparseEncoder(k1=1.3).spec,
        SparseEncoder(b=0.7).spec,
        SparseEncoder(avg_len=100).spec,
        SparseEncoder(tokenizer="jieba").spec,
    }
    assert default.spec not in others and len(others) == 4
    assert SparseEncoder(avg_len=120).spec == default.spec  # 120 and 120.0 encode alike


def _spec_with(field: str, value: str) -> str:
    fields = SparseEncoder().spec.split(" ")
    return " ".join(f"{field}={value}" if item.startswith(f"{field}=") else item for item in fields)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "version ''"),
        ("bm25/v2 tokenizer=rjieba-1 k1=1.2", "version 'bm25/v2'"),
        (SparseEncoder().spec + " extra=1", "unknown field 'extra=1'"),
        (SparseEncoder().spec + " k1=1.2", "field 'k1=1.2'"),  # twice
        (SparseEncoder().spec.replace(" b=0.75", ""), "missing b"),
        (SparseEncoder().spec.replace(" b=0.75", " b0.75"), "field 'b0.75'"),
        (SparseEncoder().spec.replace(" b=0.75", " b="), "field 'b='"),
        (_spec_with("tokenizer", "whitespace-1.0"), "unknown tokenizer 'whitespace-1.0'"),
        (_spec_with("k1", "high"), "must be numbers"),
        (_spec_with("k1", "nan"), "finite k1"),
        (_spec_with("b", "1.5"), "0 <= b <= 1"),
        (_spec_with("avg_len", "0.0"), "avg_len > 0"),
        # Not as this process writes it: other library releases, or another spelling.
        (_spec_with("tokenizer", "rjieba-0.0.1"), "this process encodes as"),
        (_spec_with("stemmer", "snowball-0.1"), "this process encodes as"),
        (_spec_with("k1", "1.20"), "this process encodes as"),
    ],
)
def test_a_bad_spec_is_refused_precisely(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="sparse encoder spec") as caught:
        SparseEncoder.from_spec(spec)
    assert fragment in str(caught.value)
