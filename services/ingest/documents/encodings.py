"""Bytes of a text file to ``str``: byte-order marks, then strict UTF-8, then charset-normalizer.

Chinese and Japanese users still save text and CSV in GBK, GB18030, Big5 or Shift-JIS, and
Windows tools write UTF-16; guessing wrong yields mojibake that is indexed silently and never
found again, so a file whose bytes fit no encoding well is rejected instead of kept.

Order matters: a BOM is proof, UTF-16 without one shows as a NUL in every other byte, UTF-8
that decodes strictly is almost never an accident, and only then does statistical detection
(charset-normalizer, which scores every candidate code page by how plausible the decoded
text is) choose among the legacy encodings.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections import Counter
from dataclasses import dataclass

from charset_normalizer import from_bytes

# Share of characters that may be control/unassigned/private-use before text counts as garbage.
MAX_GARBAGE_RATIO = 0.02
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class NotText(ValueError):
    """The bytes are not text in any encoding we can recognise (binary, or too damaged)."""


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str


def garbage_ratio(text: str) -> float:
    """Share of control, unassigned, private-use or surrogate characters in the first 100k."""
    if not text:
        return 0.0
    sample = text[:100_000]
    # Each distinct character looked up once (text repeats its characters: a Chinese passage
    # of 500 has about 250), counted as often as it occurs.
    bad = sum(
        count
        for ch, count in Counter(sample).items()
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs")
    )
    return bad / len(sample)


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 without a BOM: ASCII-range text leaves every other byte zero, which no 8-bit text does."""
    if len(data) < 4 or len(data) % 2:
        return None
    sample = data[:4096]
    even_zero = sample[0::2].count(0) / (len(sample) // 2)
    odd_zero = sample[1::2].count(0) / (len(sample) // 2)
    for ratio, codec in ((odd_zero, "utf-16-le"), (even_zero, "utf-16-be")):
        if ratio > 0.3:
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                return None
    return None


def detect_and_decode(data: bytes) -> Decoded:
    """Decode ``data``; raises :class:`NotText` with the reason when no encoding fits."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(codec), codec)
            except UnicodeDecodeError:
                break  # a BOM followed by garbage: let detection try
    # Before UTF-8: NUL bytes are valid UTF-8, so ASCII-range UTF-16 would "decode" as garbage.
    utf16 = _utf16_without_bom(data)
    if utf16 is not None and garbage_ratio(utf16) <= MAX_GARBAGE_RATIO:
        return Decoded(utf16, "utf-16")
    try:
        return _checked(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is None:
        raise NotText("no character encoding fits its bytes; is it binary?")
    return _checked(str(best), best.encoding)


def _checked(text: str, encoding: str) -> Decoded:
    if garbage_ratio(text) > MAX_GARBAGE_RATIO:
        raise NotText("it decodes to control or unassigned characters")
    return Decoded(text, encoding)
