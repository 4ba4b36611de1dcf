"""File parsers, chosen by extension: bytes in, text segments (with page numbers etc.) out.

One module per format family (text, pdf, office, web, mail, ocr, archive); ``registry`` maps
extensions to them and holds :func:`parse`, the only entry point the pipeline needs.
"""

from services.ingest.documents.parsers.base import DEFAULT_LIMITS, ParseError, ParseLimits, Segment
from services.ingest.documents.parsers.registry import PARSERS, parse, supported_extensions

__all__ = [
    "DEFAULT_LIMITS",
    "PARSERS",
    "ParseError",
    "ParseLimits",
    "Segment",
    "parse",
    "supported_extensions",
]
