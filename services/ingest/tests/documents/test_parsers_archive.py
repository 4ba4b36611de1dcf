"""Zip archives: one level expanded, members named, bombs, traversal and nesting refused."""

from __future__ import annotations

import contextlib
import io
import re
import tracemalloc
import zipfile
from collections.abc import Callable

import pytest
from PIL import Image, ImageDraw, ImageFont

from services.ingest.documents.parsers import ParseError, ParseLimits, parse
from services.ingest.tests.conftest import DOCS
from services.ingest.tests.documents import zips


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
    with pytest.raises(
        ParseError,
        match=r"^liar\.zip: member 'zeros\.txt' declares 100 bytes but inflates to more; refused at the "
        r"first byte past its declared size \(zip bomb\?\)$",
    ):
        parse("liar.zip", bytes(data), limits=ParseLimits(zip_max_expanded_bytes=1_000_000))


def _peak_bytes_while(work: Callable[[], object]) -> int:
    """The most memory Python objects held at once while ``work`` ran (inflated bytes included)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(ParseError):
            work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_member_lying_about_its_size_is_refused_at_its_first_extra_byte_in_flat_memory() -> None:
    """1,000 bytes declared, 1 GiB inside, 1 MB on disk: refused without inflating more than a piece."""
    data = zips.build(zips.honest("readme.txt", b"fine"), zips.lying("bomb.txt", 1000, inflated_mib=1024))
    assert len(data) < 2 * zips.MIB
    with pytest.raises(
        ParseError, match=r"^bomb\.zip: member 'bomb\.txt' declares 1,000 bytes but inflates to more; refused"
    ):
        parse("bomb.zip", data)
    peak = _peak_bytes_while(lambda: parse("bomb.zip", data))
    assert peak < 16 * zips.MIB, f"peak {peak / zips.MIB:.0f} MiB while refusing a lying member"


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("lying.docx", "word/document.xml"),
        ("lying.xlsx", "xl/worksheets/sheet1.xml"),
        ("lying.pptx", "ppt/slides/slide1.xml"),
        ("lying.epub", "OEBPS/c1.xhtml"),
    ],
)
def test_a_document_part_lying_about_its_size_is_refused_before_the_library_reads_it(
    name: str, part: str
) -> None:
    """python-docx, openpyxl and python-pptx read parts whole: the same attack inside an office file."""
    with zipfile.ZipFile(DOCS / "test.docx") as original:
        parts = [zips.honest(info.filename, original.read(info)) for info in original.infolist()]
    # The liar takes the place of the part of that name (word/document.xml: read by every parse).
    data = zips.build(*(p for p in parts if p.name != part), zips.lying(part, 2000, inflated_mib=1024))
    with pytest.raises(
        ParseError,
        match=rf"^{re.escape(name)}: part '{re.escape(part)}' declares 2,000 bytes but inflates to more",
    ):
        parse(name, data)
    assert _peak_bytes_while(lambda: parse(name, data)) < 16 * zips.MIB
    # The same parts without the liar are a readable document: the check refuses only the lie.
    honest = parse("honest.docx", zips.build(*parts), limits=ParseLimits(embedded_images=0))
    assert "AutoGen" in honest[0].text


def test_members_compressed_without_an_output_bound_are_refused() -> None:
    """zipfile inflates bzip2 pieces whole (178 bytes of bzip2 hold 200 MB), so only stored
    and deflated members are read."""
    with pytest.raises(
        ParseError, match=r"^packed\.zip: member 'a\.txt' uses zip compression method 12; only"
    ):
        parse("packed.zip", _zip({"a.txt": b"text " * 100}, zipfile.ZIP_BZIP2))
    assert parse("stored.zip", _zip({"a.txt": b"stored text"}, zipfile.ZIP_STORED))[0].text == "stored text"


def test_a_member_whose_bytes_do_not_match_its_crc_is_corrupt() -> None:
    data = bytearray(_zip({"a.txt": b"some text that will not match its checksum"}))
    directory = data.rindex(b"PK\x01\x02")
    data[directory + 16] ^= 0xFF  # the CRC-32 in the central directory
    with pytest.raises(ParseError, match=r"^crc\.zip: member 'a\.txt' cannot be extracted \(bad CRC-32"):
        parse("crc.zip", bytes(data))


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
