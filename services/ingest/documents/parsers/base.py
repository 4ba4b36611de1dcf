"""What every parser shares: the Segment it returns, the ParseError it raises, limits, helpers.

Every failure a user can cause (unknown type, binary garbage, a corrupt or encrypted file, a
zip bomb) becomes a :class:`ParseError` whose message names the file and the reason, because
that message is what the user reads on the failed job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.ingest.documents.encodings import NotText, detect_and_decode


class ParseError(InvalidArgument):
    """The file cannot be turned into text; the job fails with this message."""


@dataclass(frozen=True)
class Segment:
    """A run of text with where it came from.

    Metadata keys in use: ``page`` (1-based, paged formats: PDF pages, slides), ``sheet``
    (spreadsheets), ``member`` (name inside a zip archive), ``title`` (HTML/e-mail subject),
    ``chapter`` (e-book), ``ocr`` ("true" when the text was recognised from pixels).
    Headings stay in the text as Markdown ``#`` lines; the splitter turns them into the
    ``heading`` path of each chunk.
    """

    text: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseLimits:
    """Caps on what one file may expand to; the defaults fit documents, not denial of service."""

    max_pages: int = 5000
    zip_max_members: int = 1000
    zip_max_expanded_bytes: int = 512 * 1024 * 1024
    image_max_pixels: int = 64_000_000
    # Pictures inside a .docx/.pptx that are OCRed (the first ones in reading order); 0 = none.
    embedded_images: int = 20
    # Seconds one legacy-format conversion (LibreOffice, antiword) may take before it is killed.
    convert_timeout_s: float = 120.0


DEFAULT_LIMITS = ParseLimits()

Parser = Callable[[str, bytes, ParseLimits], list[Segment]]


def decode_text(name: str, data: bytes) -> str:
    """Decode a text file in whatever encoding it uses, or fail saying it is not text."""
    try:
        return detect_and_decode(data).text
    except NotText as error:
        raise ParseError(f"{name}: not a text file ({error})") from None


def normalise(text: str) -> str:
    """Unify newlines and trim trailing spaces, keeping paragraph breaks for the splitter."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def cell_text(value: object) -> str:
    """One spreadsheet/table value as text: whole floats without ``.0``, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def markdown_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("\n", " ").replace("|", "\\|").strip() for c in cells) + " |"


def markdown_table(rows: list[list[str]]) -> str:
    """Rows as a Markdown table whose first row is the header; empty rows and columns dropped.

    The header row is what makes a table row meaningful on its own; the splitter repeats it
    at the top of every chunk that starts inside the table.
    """
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    keep = [i for i in range(width) if any(row[i].strip() for row in rows)]
    rows = [[row[i] for i in keep] for row in rows]
    lines = [markdown_row(rows[0]), markdown_row(["---"] * len(keep))]
    lines.extend(markdown_row(row) for row in rows[1:])
    return "\n".join(lines)


def single(text: str, metadata: dict[str, str] | None = None) -> list[Segment]:
    """One normalised segment, or none when nothing is left."""
    text = normalise(text)
    return [Segment(text, metadata or {})] if text else []
