"""Encoding detection: BOMs, UTF-8, UTF-16 without BOM, and the legacy CJK code pages."""

from __future__ import annotations

import random

import pytest

from services.ingest.documents.encodings import NotText, detect_and_decode
from services.ingest.documents.parsers import parse
from services.ingest.tests.conftest import DOCS

SIMPLIFIED = (
    "知识库问答系统先把文档切分成小块，再用向量模型为每一块编码。"
    "用户提问时，系统检索最相关的段落，并把它们交给大语言模型生成答案。"
)
TRADITIONAL = (
    "知識庫問答系統先把文件切分成小塊，再用向量模型為每一塊編碼。"
    "使用者提問時，系統檢索最相關的段落，並把它們交給大型語言模型產生答案。"
)
JAPANESE = "日本語のテキストです。知識ベースの質問応答システムは文書を小さな塊に分割して検索します。"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        (SIMPLIFIED, "gbk"),
        (SIMPLIFIED, "gb18030"),
        (SIMPLIFIED + "𠀀𪚥", "gb18030"),  # characters outside GBK: only GB18030 has them
        (TRADITIONAL, "big5"),
        (JAPANESE, "shift_jis"),
        (JAPANESE, "cp932"),
        (SIMPLIFIED, "utf-16"),  # with BOM
        (SIMPLIFIED, "utf-16-le"),  # without BOM
        (SIMPLIFIED, "utf-16-be"),
        ("Plain English text, in UTF-16 without a byte-order mark.", "utf-16-le"),
        (SIMPLIFIED, "utf-8"),
        (SIMPLIFIED, "utf-8-sig"),
        (SIMPLIFIED, "utf-32"),
    ],
)
def test_round_trips_each_encoding(text: str, encoding: str) -> None:
    assert detect_and_decode(text.encode(encoding)).text.lstrip("\ufeff") == text


def test_reports_the_encoding_it_chose() -> None:
    assert detect_and_decode("名前,年齢".encode()).encoding == "utf-8"
    assert detect_and_decode(SIMPLIFIED.encode("gb18030")).encoding in ("gb18030", "gbk", "gb2312")


def test_shift_jis_csv_from_the_evaluation_set() -> None:
    decoded = detect_and_decode((DOCS / "test_mskanji.csv").read_bytes())
    assert decoded.text.splitlines()[0] == "名前,年齢,住所"
    assert "髙橋淳,35,名古屋" in decoded.text  # 髙 exists only in the Microsoft extension (cp932)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_bytes_are_not_text(seed: int) -> None:
    rng = random.Random(seed)
    with pytest.raises(NotText):
        detect_and_decode(bytes(rng.getrandbits(8) for _ in range(4096)))


@pytest.mark.parametrize("encoding", ["gbk", "big5", "utf-16-le"])
def test_text_and_csv_parsers_use_detection(encoding: str) -> None:
    text = TRADITIONAL if encoding == "big5" else SIMPLIFIED
    (segment,) = parse("说明.txt", text.encode(encoding))
    assert segment.text == text
    csv = f"名稱,說明\n甲,{text}\n".encode(encoding)
    (table,) = parse("表.csv", csv)
    assert table.text.splitlines()[0] == "| 名稱 | 說明 |"
    assert f"| 甲 | {text} |" in table.text
