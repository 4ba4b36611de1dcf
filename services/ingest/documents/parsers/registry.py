"""Which parser reads which extension, and the one entry point, :func:`parse`."""

from __future__ import annotations

from pathlib import PurePath

from services.ingest.documents.encodings import NotText, detect_and_decode
from services.ingest.documents.parsers.archive import parse_zip
from services.ingest.documents.parsers.base import DEFAULT_LIMITS, ParseError, ParseLimits, Parser, Segment
from services.ingest.documents.parsers.converted import parse_converted
from services.ingest.documents.parsers.mail import parse_eml, parse_msg
from services.ingest.documents.parsers.ocr import parse_image
from services.ingest.documents.parsers.office import parse_docx, parse_pptx, parse_xls, parse_xlsx
from services.ingest.documents.parsers.opendocument import parse_odp, parse_ods, parse_odt
from services.ingest.documents.parsers.pdf import parse_pdf
from services.ingest.documents.parsers.rtf import parse_rtf
from services.ingest.documents.parsers.text import (
    parse_delimited,
    parse_ipynb,
    parse_json,
    parse_jsonl,
    parse_text,
)
from services.ingest.documents.parsers.web import parse_epub, parse_html, parse_xml

PARSERS: dict[str, Parser] = {
    ".txt": parse_text,
    ".text": parse_text,
    ".log": parse_text,
    ".md": parse_text,
    ".markdown": parse_text,
    ".rst": parse_text,
    ".csv": parse_delimited,
    ".tsv": parse_delimited,
    ".json": parse_json,
    ".jsonl": parse_jsonl,
    ".ndjson": parse_jsonl,
    ".ipynb": parse_ipynb,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".pptx": parse_pptx,
    ".xlsx": parse_xlsx,
    ".xlsm": parse_xlsx,
    ".xls": parse_xls,
    ".doc": parse_converted,
    ".ppt": parse_converted,
    ".wps": parse_converted,
    ".dps": parse_converted,
    ".rtf": parse_rtf,
    ".odt": parse_odt,
    ".ods": parse_ods,
    ".odp": parse_odp,
    ".html": parse_html,
    ".htm": parse_html,
    ".xhtml": parse_html,
    ".xml": parse_xml,
    ".rss": parse_xml,
    ".atom": parse_xml,
    ".epub": parse_epub,
    ".eml": parse_eml,
    ".msg": parse_msg,
    ".png": parse_image,
    ".jpg": parse_image,
    ".jpeg": parse_image,
    ".bmp": parse_image,
    ".zip": parse_zip,
}


# Leading bytes of common containers: (magic, what it is, the extensions that may hold it).
_MAGIC: tuple[tuple[bytes, str, frozenset[str]], ...] = (
    (b"%PDF-", "a PDF document", frozenset({".pdf"})),
    (
        b"PK\x03\x04",
        "a zip container (zip, docx, xlsx, pptx, epub or OpenDocument)",
        frozenset({".zip", ".docx", ".xlsx", ".xlsm", ".pptx", ".epub", ".odt", ".ods", ".odp"}),
    ),
    (
        b"\xd0\xcf\x11\xe0",
        "an OLE2 file (xls, msg or legacy Office)",
        frozenset({".xls", ".msg", ".doc", ".ppt", ".wps", ".dps"}),
    ),
    (b"{\\rtf", "an RTF document", frozenset({".rtf", ".doc"})),
    (b"\x89PNG", "a PNG image", frozenset({".png"})),
    (b"\xff\xd8\xff", "a JPEG image", frozenset({".jpg", ".jpeg"})),
    (b"BM", "a BMP image", frozenset({".bmp"})),
)


def _content_hint(suffix: str, data: bytes) -> str:
    """' (the content looks like X)' when the bytes say another type than the extension does."""
    for magic, kind, suffixes in _MAGIC:
        if data.startswith(magic) and suffix not in suffixes:
            return f" (the content looks like {kind}; is the extension wrong?)"
    return ""


def supported_extensions() -> list[str]:
    return sorted(PARSERS)


def _parser_for(name: str, data: bytes) -> Parser:
    suffix = PurePath(name).suffix.lower()
    parser = PARSERS.get(suffix)
    if parser is not None:
        return parser
    if not suffix:
        # LICENSE, README, NOTICE: extension-less files are read as text when they are text.
        try:
            detect_and_decode(data)
            return PARSERS[".txt"]
        except NotText:
            raise ParseError(
                f"{name}: unsupported file type without an extension (and the content is not text)"
            ) from None
    raise ParseError(
        f"{name}: unsupported file type '{suffix}' (supported: {', '.join(supported_extensions())})"
    )


def parse(name: str, data: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> list[Segment]:
    """Parse ``data`` as the type its file name says; ParseError when that is impossible."""
    if not data:
        raise ParseError(f"{name}: the file is empty")
    parser = _parser_for(name, data)
    try:
        segments = parser(name, data, limits)
    except ParseError as error:
        raise ParseError(f"{error}{_content_hint(PurePath(name).suffix.lower(), data)}") from None
    except Exception as error:  # parsing libraries fail in many ways on corrupt input
        hint = _content_hint(PurePath(name).suffix.lower(), data)
        raise ParseError(f"{name}: could not be parsed ({type(error).__name__}: {error}){hint}") from None
    if not any(segment.text.strip() for segment in segments):
        raise ParseError(f"{name}: no text found in the file")
    return segments
