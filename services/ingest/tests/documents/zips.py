"""Zip files built byte by byte, so their headers can say what the tests need them to say.

A lying member declares a small uncompressed size (and the CRC of that many zero bytes, so
nothing but its real length betrays it) while its deflate stream inflates to far more. The
stream is one fully flushed deflate block of 1 MiB of zeros repeated: a full flush resets the
compressor's history, so the block's bytes are valid again after themselves, and a 1.5 GiB
member takes about 1.5 MB on disk and no time to build.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    body: bytes  # raw deflate stream
    declared_size: int
    crc: int


def honest(name: str, data: bytes) -> Entry:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Entry(name, compressor.compress(data) + compressor.flush(), len(data), zlib.crc32(data))


def lying(name: str, declared_size: int, inflated_mib: int) -> Entry:
    """A member that declares ``declared_size`` bytes and inflates to ``inflated_mib`` MiB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b"\0" * MIB) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty last block
    return Entry(name, block * inflated_mib + final, declared_size, zlib.crc32(b"\0" * declared_size))


def build(*entries: Entry) -> bytes:
    """A zip archive of deflated ``entries`` whose headers state exactly what each entry says."""
    local, central = bytearray(), bytearray()
    for entry in entries:
        name = entry.name.encode()
        sizes = (entry.crc, len(entry.body), entry.declared_size)
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0x800,
            8,
            0,
            0x21,
            *sizes,
            len(name),
            0,
            0,
            0,
            0,
            0,
            len(local),
        )
        central += name
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0x800, 8, 0, 0x21, *sizes, len(name), 0) + name
        local += entry.body
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(local), 0
    )
    return bytes(local + central + end)
