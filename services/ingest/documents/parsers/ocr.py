"""Offline OCR with RapidOCR (PP-OCRv4 det/rec ONNX models shipped inside its wheel).

The engine loads once per process, on first use, and is shared: loading costs a few tenths of
a second and ~100 MB, which per file would dominate small scans. Calls are serialised by a
lock because one engine's sessions are used in sequence (det -> cls -> rec); onnxruntime
already spreads each call over the cores.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from typing import Any

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment, single
from services.ingest.documents.parsers.pictures import image_file_text

log = logging.getLogger("zhiku.ingest.parsers")

_LOCK = threading.Lock()
# Smaller images hold no readable line of text (icons, bullets, spacer pixels): not OCRed.
MIN_OCR_WIDTH, MIN_OCR_HEIGHT = 32, 16


# Text detection scales each image so its longer side is at most this many pixels. RapidOCR's
# default scales the *shorter* side up to 736, which makes a small screenshot or a blank
# page cost as much as a full scan (seconds); capping the longer side keeps small images
# cheap and a 144-dpi A4 render (1190x1684) nearly at full resolution.
DET_MAX_SIDE = 1600


@functools.cache
def _engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(det_limit_type="max", det_limit_side_len=DET_MAX_SIDE)


def _lines(result: list[Any]) -> list[str]:
    """Boxes to reading-order lines: boxes whose vertical centres are close share a line."""
    boxes = []
    for box, text, _score in result:
        ys = [point[1] for point in box]
        xs = [point[0] for point in box]
        boxes.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text))
    boxes.sort()
    lines: list[list[tuple[float, str]]] = []
    centre = height = 0.0
    for y, h, x, text in boxes:
        if lines and abs(y - centre) < max(h, height) / 2:
            lines[-1].append((x, text))
        else:
            lines.append([(x, text)])
            centre, height = y, h
    return [" ".join(text for _, text in sorted(line)) for line in lines]


def recognise(image: Any) -> str:
    """Text in an RGB image (numpy array), lines in reading order; empty when there is none."""
    import numpy as np

    bgr = np.ascontiguousarray(image[:, :, ::-1])  # the engine takes OpenCV's channel order
    with _LOCK:
        engine = _engine()
        result, _elapsed = engine(bgr)
    return "\n".join(_lines(result or []))


def _pixels(name: str, data: bytes, limits: ParseLimits) -> Any:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > limits.image_max_pixels:
                raise ParseError(
                    f"{name}: image too large ({image.width}x{image.height} pixels, "
                    f"limit {limits.image_max_pixels})"
                )
            if image.width < MIN_OCR_WIDTH or image.height < MIN_OCR_HEIGHT:
                return None
            return np.array(image.convert("RGB"))
    except ParseError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ParseError(f"{name}: not a readable image ({error})") from None


def embedded_image_text(name: str, data: bytes, limits: ParseLimits) -> str:
    """Text of a picture inside a document, "" when it has none or cannot be read.

    A picture never fails its document: a broken or huge one is skipped with a log line.
    """
    try:
        pixels = _pixels(name, data, limits)
    except ParseError as error:
        log.info("skipping an embedded picture: %s", error)
        return ""
    return recognise(pixels) if pixels is not None else ""


def parse_image(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    pixels = _pixels(name, data, limits)
    text = image_file_text(data, recognise(pixels) if pixels is not None else "", limits)
    if not text.strip():
        raise ParseError(f"{name}: no text found in the image (OCR recognised nothing)")
    return single(text, {"ocr": "true"})
