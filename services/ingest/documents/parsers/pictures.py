"""Pictures met while parsing, kept for captioning once the parse is done.

Parsers OCR a picture where it stands and write ``[image] <text>``. Captions come from a
network call, too slow to make one picture at a time inside a parser, so a caller that
captions (the worker, with a vision endpoint configured) parses inside :func:`collecting`:
each picture's line is then written with a placeholder (``[image#<nonce>-<n>] <text>``) and
the picture is kept, scaled down and PNG-encoded, in the :class:`PictureCollector`. After the
parse every picture is captioned at once (bounded concurrency) and :func:`apply_captions`
turns each placeholder into ``[image] caption: ... | text: ...``, or back into the plain OCR
line when its caption failed. Without a collector parsers write exactly what they always did.

The same picture twice in a file (a logo on every slide) is one picture with one caption, and
its lines stay identical, so the PDF parser still drops it as a running line where it did.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import re
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment, normalise

log = logging.getLogger("zhiku.ingest.parsers")

# Pictures whose shorter side is under this many pixels (icons, bullets, rules, thin banners)
# are not worth a caption; their OCR text, if any, is still written.
MIN_CAPTION_SIDE = 64


@dataclass(frozen=True)
class CollectedPicture:
    """One distinct picture to caption: its placeholder number and its PNG bytes."""

    number: int
    png: bytes


@dataclass
class PictureCollector:
    """The pictures of one parse, at most ``max_pictures`` distinct ones, each at most
    ``max_pixels`` once scaled."""

    max_pictures: int
    max_pixels: int
    nonce: str = field(default_factory=lambda: secrets.token_hex(4))
    pictures: list[CollectedPicture] = field(default_factory=list)
    _by_digest: dict[str, int] = field(default_factory=dict)
    # Numbers of pictures that are whole files (a .png upload): no "[image]" line of their own.
    standalone: set[int] = field(default_factory=set)

    def placeholder(self, number: int) -> str:
        return f"[image#{self.nonce}-{number}]"

    def pattern(self) -> re.Pattern[str]:
        """A placeholder and, as group 2, the space after it when OCR text follows."""
        return re.compile(re.escape(f"[image#{self.nonce}-") + r"(\d+)\]( )?")

    def without_placeholders(self, text: str) -> str:
        return self.pattern().sub("", text)

    def add(self, image: bytes | Any, limits: ParseLimits) -> int | None:
        """The picture's number, or None when it is not captioned (too small, unreadable, over
        the cap). ``image``: encoded bytes (a picture inside a .docx) or an RGB numpy array."""
        digest = hashlib.sha256(image if isinstance(image, bytes) else image.tobytes()).hexdigest()
        if digest in self._by_digest:
            return self._by_digest[digest]
        if len(self.pictures) >= self.max_pictures:
            return None
        png = _png(image, limits, self.max_pixels)
        if png is None:
            return None
        number = len(self.pictures)
        self.pictures.append(CollectedPicture(number, png))
        self._by_digest[digest] = number
        return number


_COLLECTOR: ContextVar[PictureCollector | None] = ContextVar("zhiku_picture_collector", default=None)


@contextlib.contextmanager
def collecting(collector: PictureCollector) -> Iterator[PictureCollector]:
    """Parse inside this block to have pictures kept for captions (one thread, one collector)."""
    token = _COLLECTOR.set(collector)
    try:
        yield collector
    finally:
        _COLLECTOR.reset(token)


def _png(image: bytes | Any, limits: ParseLimits, max_pixels: int) -> bytes | None:
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(image)) if isinstance(image, bytes) else Image.fromarray(image)
        with picture:
            width, height = picture.size
            if min(width, height) < MIN_CAPTION_SIDE or width * height > limits.image_max_pixels:
                return None
            if width * height > max_pixels:
                scale = math.sqrt(max_pixels / (width * height))
                size = (max(1, int(width * scale)), max(1, int(height * scale)))
                picture.draft("RGB", size)  # JPEG decodes at a fraction of its size: cheaper
                converted = picture.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            else:
                converted = picture.convert("RGB")
            buffer = io.BytesIO()
            converted.save(buffer, format="PNG", optimize=False)
            return buffer.getvalue()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
    ) as error:
        log.info("not captioning a picture that cannot be decoded: %s: %s", type(error).__name__, error)
        return None


def picture_line(image: bytes | Any, ocr_text: str, limits: ParseLimits) -> str:
    """The line a parser writes for a picture inside a document.

    Without a collector: ``[image] <OCR text>``, or "" when the picture holds no text. With one:
    a placeholder followed by the OCR text, which :func:`apply_captions` completes later.
    """
    ocr_text = ocr_text.strip()
    collector = _COLLECTOR.get()
    number = collector.add(image, limits) if collector is not None else None
    if collector is None or number is None:
        return f"[image] {ocr_text}" if ocr_text else ""
    marker = collector.placeholder(number)
    return f"{marker} {ocr_text}" if ocr_text else marker


def image_file_text(data: bytes, ocr_text: str, limits: ParseLimits) -> str:
    """The text of a picture that is the whole file: its OCR text, or with a collector a
    placeholder before it (the caption goes there; nothing when the caption fails)."""
    ocr_text = ocr_text.strip()
    collector = _COLLECTOR.get()
    number = collector.add(data, limits) if collector is not None else None
    if collector is None or number is None:
        return ocr_text
    collector.standalone.add(number)
    marker = collector.placeholder(number)
    return f"{marker} {ocr_text}" if ocr_text else marker


def _one_line(caption: str) -> str:
    return " ".join(caption.split())


def apply_captions(
    name: str, segments: list[Segment], collector: PictureCollector, captions: dict[int, str]
) -> list[Segment]:
    """Segments with every placeholder replaced: ``[image] caption: C | text: T`` where
    picture n has a caption C in ``captions``, the plain OCR line where it has none.

    Segments left without text are dropped; ParseError when nothing at all is left (a picture
    file with no text whose caption failed), as the parse would have said without captions.
    """
    pattern = collector.pattern()

    def replace(match: re.Match[str]) -> str:
        number, has_text = int(match.group(1)), match.group(2) is not None
        caption = _one_line(captions.get(number, ""))
        if caption:
            return f"[image] caption: {caption} | text: " if has_text else f"[image] caption: {caption}"
        if number in collector.standalone:
            return ""
        return "[image] " if has_text else ""

    result = []
    for segment in segments:
        replaced = pattern.sub(replace, segment.text)
        text = normalise(replaced) if replaced != segment.text else segment.text
        if text:
            result.append(Segment(text, segment.metadata))
    if not result:
        raise ParseError(f"{name}: no text found (OCR recognised nothing and no picture could be captioned)")
    return result
