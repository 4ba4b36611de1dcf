"""The Chinese-aware splitter: sentence boundaries, sizes, overlap, metadata."""

from __future__ import annotations

import itertools

import pytest

from services.ingest.documents.parsers import Segment
from services.ingest.documents.splitter import split_segments, split_text

SENTENCES = [f"第{i}句讲的是知识库问答系统如何把长文档切成小块，再交给向量模型编码。" for i in range(40)]
CHINESE = "".join(SENTENCES)


def test_chinese_text_splits_at_full_stops_within_size() -> None:
    chunks = split_text(CHINESE, chunk_size=120, chunk_overlap=40)
    assert len(chunks) > 5
    assert all(0 < len(chunk) <= 120 for chunk in chunks)
    # Every chunk ends at a sentence end, and starts at a sentence start: no sentence is cut.
    assert all(chunk.endswith("。") for chunk in chunks)
    assert all(chunk.startswith("第") for chunk in chunks)


def test_consecutive_chunks_overlap() -> None:
    chunks = split_text(CHINESE, chunk_size=120, chunk_overlap=40)
    for previous, current in itertools.pairwise(chunks):
        first_sentence = current[: current.index("。") + 1]
        assert previous.endswith(first_sentence), (previous, current)


def test_all_text_is_kept() -> None:
    chunks = split_text(CHINESE, chunk_size=120, chunk_overlap=0)
    assert "".join(chunks) == CHINESE


def test_no_overlap_means_disjoint_chunks() -> None:
    chunks = split_text(CHINESE, chunk_size=100, chunk_overlap=0)
    assert sum(len(chunk) for chunk in chunks) == len(CHINESE)


def test_paragraphs_come_before_sentences() -> None:
    text = "第一段第一句。第一段第二句。\n\n第二段只有一句。"
    assert split_text(text, chunk_size=16, chunk_overlap=0) == [
        "第一段第一句。第一段第二句。",
        "第二段只有一句。",
    ]


def test_long_sentences_fall_back_to_clauses_commas_then_characters() -> None:
    clauses = "甲乙丙丁戊己庚辛；" * 3 + "子丑寅卯，辰巳午未，" * 3
    chunks = split_text(clauses, chunk_size=12, chunk_overlap=0)
    assert chunks[0] == "甲乙丙丁戊己庚辛；"
    assert "子丑寅卯，辰巳午未，" in chunks
    no_marks = "字" * 50
    assert [len(c) for c in split_text(no_marks, chunk_size=20, chunk_overlap=5)] == [15, 20, 20, 10]


def test_english_sentences_split_at_period_space() -> None:
    text = "Retrieval finds passages. The model answers from them. Citations point back to files."
    chunks = split_text(text, chunk_size=60, chunk_overlap=0)
    assert chunks == [
        "Retrieval finds passages. The model answers from them.",
        "Citations point back to files.",
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", " \n \n "])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_text(text, chunk_size=50, chunk_overlap=10) == []


def test_never_empty_and_never_oversized_on_messy_text() -> None:
    messy = "\n\n".join(["短。", "", "  ", "中" * 333, "a, b; c! d? e。" * 20, "\n\n\n"])
    for size, overlap in [(20, 0), (20, 19), (50, 10), (250, 50)]:
        chunks = split_text(messy, size, overlap)
        assert chunks and all(chunk.strip() and len(chunk) <= size for chunk in chunks)


def test_segments_keep_file_page_and_a_running_chunk_index() -> None:
    segments = [Segment(CHINESE[:300], {"page": "1"}), Segment(CHINESE[300:600], {"page": "2"})]
    chunks = split_segments(segments, "手册.pdf", chunk_size=120, chunk_overlap=20)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    pages = [chunk.metadata["page"] for chunk in chunks]
    assert pages == sorted(pages) and set(pages) == {"1", "2"}
    assert all(chunk.metadata["file"] == "手册.pdf" for chunk in chunks)
    assert all(chunk.metadata["chunk_index"] == str(chunk.index) for chunk in chunks)


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="chunk_overlap"):
        split_text("x", chunk_size=10, chunk_overlap=10)
    with pytest.raises(ValueError, match="chunk_size"):
        split_text("x", chunk_size=0, chunk_overlap=0)
