"""Reading zip members without trusting their headers: bounded, piecewise inflation.

A zip member's header states its uncompressed size, and :mod:`zipfile` believes it in the worst
place: ``read()`` of a whole member hands all of its compressed bytes to one ``decompress``
call, which inflates a member that declares 1,000 bytes but holds 1.5 GiB to the full 1.5 GiB
before the result is cut to the declared size. Reading a member in bounded pieces (each
``read(n)`` inflates at most ``n`` bytes) keeps memory flat, and asking for one byte past the
declared size shows whether the member holds more than it claims. Every member is therefore
read here, piece by piece, and refused at the first byte past its declared size; the caller has
already checked the declared sizes against its budget, so nothing read here exceeds it.

Zip-based documents (docx, xlsx, pptx, epub) are opened by libraries that read their parts
whole, so :func:`check_container` inflates every part once, discarding the bytes, before the
library sees the file: a part that lies is refused, and every other part is known to inflate to
at most its declared size when the library reads it.

Only stored and deflated members are read: what every zip tool writes by default and all that
OOXML and EPUB permit. :mod:`zipfile` inflates bzip2 and LZMA members without an output bound
per piece (a few kilobytes of bzip2 can hold gigabytes), so those are refused.
"""

from __future__ import annotations

import copy
import io
import zipfile
import zlib

from services.ingest.documents.parsers.base import ParseError, ParseLimits

# Largest piece inflated at once: the most memory one member's reading holds beyond its data.
PIECE_BYTES = 1 << 20

_BOUNDED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_EXTRACT_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    EOFError,
    OSError,
    NotImplementedError,
    ValueError,
    RuntimeError,  # an encrypted member without a password
)


def _over_declared(name: str, kind: str, member: str, declared: int) -> ParseError:
    return ParseError(
        f"{name}: {kind} '{member}' declares {declared:,} bytes but inflates to more; "
        "refused at the first byte past its declared size (zip bomb?)"
    )


def inflate_member(
    name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, kind: str = "member"
) -> bytes:
    """The member's bytes, inflated piecewise and never past its declared size."""
    data = io.BytesIO()
    _inflate(name, archive, info, member, kind, data)
    return data.getvalue()


def _inflate(
    name: str,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    member: str,
    kind: str,
    sink: io.BytesIO | None,
) -> None:
    """Inflate ``info`` piece by piece into ``sink`` (None: count only), failing past its size."""
    if info.compress_type not in _BOUNDED_METHODS:
        raise ParseError(
            f"{name}: {kind} '{member}' uses zip compression method {info.compress_type}; "
            "only stored and deflated members are read (re-create the archive with the default method)"
        )
    # zipfile stops a member at its declared size and then fails its CRC check, which would
    # hide the lie among corrupt files: one byte of headroom makes the first byte past the
    # declared size visible, and the CRC is checked here instead (None turns zipfile's off).
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    probe.CRC = None  # type: ignore[assignment]
    inflated, crc = 0, 0
    try:
        with archive.open(probe) as stream:
            while piece := stream.read(PIECE_BYTES):
                inflated += len(piece)
                if inflated > info.file_size:
                    raise _over_declared(name, kind, member, info.file_size)
                crc = zlib.crc32(piece, crc)
                if sink is not None:
                    sink.write(piece)
    except _EXTRACT_ERRORS as error:
        raise ParseError(f"{name}: {kind} '{member}' cannot be extracted ({error})") from None
    if crc != info.CRC:
        raise ParseError(f"{name}: {kind} '{member}' cannot be extracted (bad CRC-32: the data is corrupt)")


def check_container(name: str, data: bytes, limits: ParseLimits) -> None:
    """Refuse a zip-based document (docx, xlsx, pptx, epub) whose parts inflate past the limit
    or past their own declared sizes, before a library reads its parts whole.

    Bytes that are not a zip are left for the format's parser to reject in its own words.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, ValueError):
        return
    with archive:
        parts = [info for info in archive.infolist() if not info.is_dir()]
        declared = sum(info.file_size for info in parts)
        if declared > limits.zip_max_expanded_bytes:
            raise ParseError(
                f"{name}: its parts expand to {declared} bytes, over the limit of "
                f"{limits.zip_max_expanded_bytes} (zip bomb?)"
            )
        for info in parts:
            _inflate(name, archive, info, info.filename, "part", None)
