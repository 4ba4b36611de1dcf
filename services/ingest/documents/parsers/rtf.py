"""Rich Text Format (.rtf) through striprtf.

RTF is 7-bit text whose other characters are escapes: ``\\uN`` (Unicode) or ``\\'xx`` (a byte of
the document's ANSI code page, ``\\ansicpgN``: 936 for GBK Chinese, 1252 for Western). The code
page is read from the header so Chinese files written by older Word or WPS decode right.
"""

from __future__ import annotations

import codecs
import re

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment, single

_CODE_PAGE = re.compile(rb"\\ansicpg(\d+)")


def _encoding(data: bytes) -> str:
    match = _CODE_PAGE.search(data[:4096])
    if match:
        candidate = f"cp{int(match.group(1))}"
        try:
            codecs.lookup(candidate)
            return candidate
        except LookupError:
            pass
    return "cp1252"


def parse_rtf(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    from striprtf.striprtf import rtf_to_text

    if not data.lstrip().startswith(b"{\\rtf"):
        raise ParseError(f"{name}: not an RTF file (it does not start with '{{\\rtf')")
    # Raw bytes past ASCII are not valid RTF, but some writers emit them: keep them one-to-one.
    text: str = rtf_to_text(  # type: ignore[no-untyped-call]  # striprtf has no annotations
        data.decode("latin-1"), encoding=_encoding(data), errors="replace"
    )
    return single(text)
