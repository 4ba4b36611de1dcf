"""The blob store keeps originals under <root>/<kb>/<file> and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.ingest.store.blobs import BlobStore


def test_write_read_replace_and_delete(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    path = store.write("知识库", "报告.pdf", b"v1")
    assert path == tmp_path / "blobs" / "知识库" / "报告.pdf"
    assert store.read("知识库", "报告.pdf") == b"v1"
    store.write("知识库", "报告.pdf", b"v2")
    assert store.read("知识库", "报告.pdf") == b"v2"
    # No temporary files are left next to the original.
    assert [p.name for p in (tmp_path / "blobs" / "知识库").iterdir()] == ["报告.pdf"]
    assert store.delete("知识库", "报告.pdf")
    assert not store.delete("知识库", "报告.pdf")
    with pytest.raises(NotFound, match=r"报告\.pdf"):
        store.read("知识库", "报告.pdf")


def test_delete_kb_removes_its_directory_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.write("a", "1.txt", b"x")
    store.write("b", "1.txt", b"y")
    store.delete_kb("a")
    assert not (tmp_path / "a").exists()
    assert store.read("b", "1.txt") == b"y"


@pytest.mark.parametrize(("kb", "name"), [("..", "x.txt"), ("kb", "../x.txt"), ("kb", ".."), ("a/b", "x")])
def test_traversal_is_rejected_before_touching_the_disk(tmp_path: Path, kb: str, name: str) -> None:
    store = BlobStore(tmp_path / "root")
    with pytest.raises(InvalidArgument):
        store.write(kb, name, b"evil")
    assert not any(tmp_path.rglob("*x*"))
