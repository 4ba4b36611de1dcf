"""Zip archives: one level expanded, members named, bombs, traversal and nesting refused."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image, ImageDraw, ImageFont

from services.ingest.parsers import ParseError, ParseLimits, parse
from services.ingest.tests.conftest import DOCS


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_members_are_parsed_with_their_names() -> None:
    data = _zip(
        {
            "docs/说明.txt": "年假申请需提前三天。".encode("gbk"),
            "docs/test.docx": (DOCS / "test.docx").read_bytes(),
            "invoice.pdf": (DOCS / "REPAIR-2022-INV-001_multipage.pdf").read_bytes(),
            "__MACOSX/._invoice.pdf": b"\x00\x05\x16\x07",
            "notes.bin": b"\x00\x01",
        }
    )
    segments = parse("bundle.zip", data)
    members = [s.metadata["member"] for s in segments]
    assert members == ["docs/说明.txt", "docs/test.docx", "invoice.pdf", "invoice.pdf", "invoice.pdf"]
    assert segments[0].text == "年假申请需提前三天。"
    assert [s.metadata.get("page") for s in segments[2:]] == ["1", "2", "3"]


def test_the_evaluation_zip_expands_one_level() -> None:
    """test_files.zip's members, its photo swapped for a small scan (tests/e2e OCRs the photo)."""
    with zipfile.ZipFile(DOCS / "test_files.zip") as original:
        members = {name: original.read(name) for name in original.namelist() if name != "test.jpg"}
    image = Image.new("RGB", (700, 120), "white")
    ImageDraw.Draw(image).text(
        (30, 30), "Scanned receipt 2024", fill="black", font=ImageFont.load_default(size=44)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    members["scan.png"] = buffer.getvalue()
    segments = parse("test_files.zip", _zip(members), limits=ParseLimits(embedded_images=0))
    assert {s.metadata["member"] for s in segments} == {
        "test.docx",
        "test.pptx",
        "test.xlsx",
        "test_blog.html",
        "test_serp.html",
        "test_wikipedia.html",
        "scan.png",
    }
    (scan,) = [s for s in segments if s.metadata["member"] == "scan.png"]
    assert scan.metadata["ocr"] == "true" and "receipt" in scan.text.lower()
    (sheet,) = [
        s for s in segments if s.metadata["member"] == "test.xlsx" and s.metadata["sheet"] == "Sheet1"
    ]
    assert "| Alpha | Beta | Gamma | Delta |" in sheet.text


def test_zip_bomb_fails_on_declared_size() -> None:
    data = _zip({"zeros.txt": b"0" * 2_000_000})
    assert len(data) < 10_000
    with pytest.raises(ParseError, match=r"bomb\.zip: expands to 2000000 bytes, over the limit of 1000000"):
        parse("bomb.zip", data, limits=ParseLimits(zip_max_expanded_bytes=1_000_000))


def test_zip_bomb_fails_on_inflated_size_when_headers_lie() -> None:
    data = bytearray(_zip({"zeros.txt": b"0" * 2_000_000}))
    # Rewrite the declared uncompressed size in the central directory to a harmless 100 bytes.
    directory = data.rindex(b"PK\x01\x02")
    data[directory + 24 : directory + 28] = (100).to_bytes(4, "little")
    with pytest.raises(ParseError, match=r"liar\.zip: .*(limit|bomb|cannot be extracted)"):
        parse("liar.zip", bytes(data), limits=ParseLimits(zip_max_expanded_bytes=1_000_000))


def test_too_many_members() -> None:
    data = _zip({f"f{i}.txt": b"x" for i in range(5)})
    with pytest.raises(ParseError, match=r"many\.zip: too many members \(5, limit 4\)"):
        parse("many.zip", data, limits=ParseLimits(zip_max_members=4))


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_path_traversal_refuses_the_archive(member: str) -> None:
    with pytest.raises(ParseError, match=r"unsafe member path"):
        parse("evil.zip", _zip({"ok.txt": b"fine", member: b"evil"}))


def test_nested_archive_is_refused() -> None:
    inner = _zip({"a.txt": b"inside"})
    with pytest.raises(ParseError, match=r"outer\.zip: nested archive 'inner\.zip'"):
        parse("outer.zip", _zip({"a.txt": b"outside", "inner.zip": inner}))


def test_member_failure_names_archive_and_member() -> None:
    with pytest.raises(ParseError, match=r"pack\.zip: member broken\.pdf: not a readable PDF"):
        parse("pack.zip", _zip({"broken.pdf": b"%PDF-1.4 garbage"}))


def test_archive_of_only_unsupported_members() -> None:
    with pytest.raises(ParseError, match=r"odd\.zip: no readable documents in the archive .*a\.bin"):
        parse("odd.zip", _zip({"a.bin": b"\x00"}))


def test_truncated_zip() -> None:
    data = (DOCS / "test_files.zip").read_bytes()
    with pytest.raises(ParseError, match=r"cut\.zip: not a readable zip archive"):
        parse("cut.zip", data[: len(data) // 2])


@pytest.mark.parametrize("name", ["bomb.docx", "bomb.xlsx", "bomb.pptx", "bomb.epub"])
def test_zip_based_documents_are_checked_for_bombs_too(name: str) -> None:
    data = _zip({"[Content_Types].xml": b"<Types/>", "word/padding.xml": b" " * 2_000_000})
    with pytest.raises(ParseError, match=rf"{name.replace('.', '[.]')}: its parts expand to \d+ bytes, over"):
        parse(name, data, limits=ParseLimits(zip_max_expanded_bytes=1_000_000))
