"""File parsers, chosen by extension: bytes in, text segments (with page numbers etc.) out.

Every failure a user can cause (unknown type, binary garbage, a corrupt PDF) becomes a
:class:`ParseError` whose message names the file and the reason, because that message is
what the user reads on the failed job.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath

from services.common.errors import InvalidArgument


class ParseError(InvalidArgument):
    """The file cannot be turned into text; the job fails with this message."""


@dataclass(frozen=True)
class Segment:
    """A run of text with where it came from (``page`` for PDFs, ``title`` for HTML ...)."""

    text: str
    metadata: dict[str, str] = field(default_factory=dict)


Parser = Callable[[str, bytes], list[Segment]]

# Share of characters that may be control/unassigned/private-use before text counts as garbage.
_MAX_GARBAGE_RATIO = 0.02
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")


def _garbage_ratio(text: str) -> float:
    if not text:
        return 0.0
    sample = text[:100_000]
    bad = sum(
        1
        for ch in sample
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs")
    )
    return bad / len(sample)


def _decode(name: str, data: bytes) -> str:
    """Bytes to str: UTF-8 (with or without BOM) first, then charset-normalizer's best guess."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise ParseError(
                f"{name}: not a text file (no character encoding fits its bytes; is it binary?)"
            ) from None
        text = str(best)
    if _garbage_ratio(text) > _MAX_GARBAGE_RATIO:
        raise ParseError(f"{name}: not a text file (it decodes to control or unassigned characters)")
    return text


def _normalise(text: str) -> str:
    """Unify newlines and trim trailing spaces, keeping paragraph breaks for the splitter."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse_text(name: str, data: bytes) -> list[Segment]:
    text = _normalise(_decode(name, data))
    return [Segment(text)] if text else []


def parse_pdf(name: str, data: bytes) -> list[Segment]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{name}: the PDF is password-protected")
        segments = []
        for number, page in enumerate(reader.pages, start=1):
            text = _normalise(page.extract_text() or "")
            if text:
                segments.append(Segment(text, {"page": str(number)}))
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        raise ParseError(f"{name}: not a readable PDF ({type(error).__name__}: {error})") from None
    if not segments:
        raise ParseError(f"{name}: the PDF has no text layer (scanned pages need OCR, not supported)")
    return segments


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("\n", " ").replace("|", "\\|").strip() for cell in cells) + " |"


def _docx_blocks(document: object) -> Iterator[str]:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for block in document.iter_inner_content():  # type: ignore[attr-defined]
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = style.removeprefix("Heading ").strip()
            if style.startswith("Heading ") and level.isdigit():
                text = "#" * min(int(level), 6) + " " + text
            elif style == "Title":
                text = "# " + text
            yield text
        elif isinstance(block, Table):
            rows = [[cell.text for cell in row.cells] for row in block.rows]
            if not rows:
                continue
            lines = [_markdown_row(rows[0]), _markdown_row(["---"] * len(rows[0]))]
            lines.extend(_markdown_row(row) for row in rows[1:])
            yield "\n".join(lines)


def parse_docx(name: str, data: bytes) -> list[Segment]:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
        text = "\n\n".join(_docx_blocks(document))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ParseError(f"{name}: not a readable .docx file ({type(error).__name__}: {error})") from None
    text = _normalise(text)
    return [Segment(text)] if text else []


_HTML_DROP = "script, style, noscript, template, svg, iframe, head, object, canvas, nav"
_HTML_BLOCKS = (
    "p, div, section, article, header, footer, nav, aside, main, li, ul, ol, dl, dt, dd, "
    "h1, h2, h3, h4, h5, h6, table, tr, blockquote, pre, figure, figcaption, form, br, hr, "
    "address, details, summary"
)


def parse_html(name: str, data: bytes) -> list[Segment]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode(name, data))
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    for node in tree.css(_HTML_DROP):
        node.decompose()
    # Block elements end lines; inline ones (a, span, b) flow into their sentence.
    for node in tree.css(_HTML_BLOCKS):
        node.insert_before("\n")
        node.insert_after("\n")
    for node in tree.css("td, th"):
        node.insert_after(" | ")
    root = tree.body or tree.root
    raw = root.text(separator="") if root is not None else ""
    lines = (re.sub(r"[ \t\u00a0\u3000]+", " ", line).strip() for line in raw.split("\n"))
    text = _normalise("\n".join(lines))
    metadata = {"title": title} if title else {}
    return [Segment(text, metadata)] if text else []


PARSERS: dict[str, Parser] = {
    ".txt": parse_text,
    ".md": parse_text,
    ".markdown": parse_text,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".html": parse_html,
    ".htm": parse_html,
}


def supported_extensions() -> list[str]:
    return sorted(PARSERS)


def parse(name: str, data: bytes) -> list[Segment]:
    """Parse ``data`` as the type its file name says; ParseError when that is impossible."""
    suffix = PurePath(name).suffix.lower()
    parser = PARSERS.get(suffix)
    if parser is None:
        kind = f"'{suffix}'" if suffix else "without an extension"
        raise ParseError(
            f"{name}: unsupported file type {kind} (supported: {', '.join(supported_extensions())})"
        )
    if not data:
        raise ParseError(f"{name}: the file is empty")
    try:
        segments = parser(name, data)
    except ParseError:
        raise
    except Exception as error:  # parsing libraries fail in many ways on corrupt input
        raise ParseError(f"{name}: could not be parsed ({type(error).__name__}: {error})") from None
    if not any(segment.text.strip() for segment in segments):
        raise ParseError(f"{name}: no text found in the file")
    return segments
