"""Zip archives, expanded one level: every supported member parsed, its name kept as ``member``.

An archive is untrusted twice over (what it claims and what it holds), so limits are checked
on the declared sizes before anything is read, and each member is inflated in bounded pieces
and refused at the first byte past its declared size (:mod:`zipsafe`): a zip bomb, honest or
lying about its size, fails cleanly while memory stays flat. Members with absolute paths or
``..`` in them fail the archive (nobody makes those by accident), archives inside archives are
refused rather than expanded, and members of types we cannot read are skipped.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import PurePosixPath

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment
from services.ingest.documents.parsers.zipsafe import inflate_member

log = logging.getLogger("zhiku.ingest.parsers")

ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".jar", ".war", ".cab", ".iso"}
)


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as the archive's creator meant it (legacy zips use CP437 or GBK)."""
    if info.flag_bits & 0x800:  # UTF-8 flag set: Python already decoded it right
        return info.filename
    raw = info.filename.encode("cp437", errors="replace")
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return info.filename


def _check_path(name: str, member: str) -> None:
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ParseError(f"{name}: unsafe member path '{member}' (absolute or '..'); archive refused")


def parse_zip(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    from services.ingest.documents.parsers.registry import PARSERS, parse

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise ParseError(f"{name}: not a readable zip archive ({error})") from None
    if len(infos) > limits.zip_max_members:
        raise ParseError(f"{name}: too many members ({len(infos)}, limit {limits.zip_max_members})")
    declared = sum(info.file_size for info in infos)
    if declared > limits.zip_max_expanded_bytes:
        raise ParseError(
            f"{name}: expands to {declared} bytes, over the limit of {limits.zip_max_expanded_bytes} "
            "(zip bomb?)"
        )
    segments: list[Segment] = []
    skipped: list[str] = []
    for info in infos:
        member = _member_name(info)
        _check_path(name, member)
        base = PurePosixPath(member).name
        suffix = PurePosixPath(base).suffix.lower()
        if member.startswith("__MACOSX/") or base.startswith((".", "~$")):
            continue  # resource forks, hidden files, Office lock files
        if suffix in ARCHIVE_SUFFIXES:
            raise ParseError(f"{name}: nested archive '{member}' (archives are expanded one level only)")
        if suffix not in PARSERS:
            skipped.append(member)
            continue
        if info.flag_bits & 0x1:
            raise ParseError(f"{name}: member '{member}' is encrypted")
        # Never past its declared size, and the declared sizes fit the budget (checked above).
        content = inflate_member(name, archive, info, member)
        if not content:
            continue
        try:
            parsed = parse(member, content, limits=limits)
        except ParseError as error:
            raise ParseError(f"{name}: member {error}") from None
        segments.extend(Segment(s.text, {**s.metadata, "member": member}) for s in parsed)
    if skipped:
        log.info("%s: skipped %d members of unsupported types: %s", name, len(skipped), skipped[:10])
    if not segments:
        detail = f" (skipped unsupported: {', '.join(skipped[:5])})" if skipped else ""
        raise ParseError(f"{name}: no readable documents in the archive{detail}")
    return segments
