"""Pictures on PDF pages that have a text layer: charts, stamps, screenshots, pasted scans.

Their text is invisible to the text layer, so each picture big enough to hold a line of
text is decoded by PDFium and OCRed like a picture in a .docx: at most
``limits.embedded_images`` per document (the first ones in reading order), and the pictures
decoded from one page together no larger than ``limits.image_max_pixels``. A picture the text
layer already covers with words (a scan with an OCR layer underneath, a background behind
text) is skipped: its text is there already.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from services.ingest.documents.parsers.base import ParseLimits
from services.ingest.documents.parsers.ocr import MIN_OCR_HEIGHT, MIN_OCR_WIDTH

log = logging.getLogger("zhiku.ingest.parsers")

# Smaller pictures as drawn on the page (points; 72 = one inch) are icons, logos and bullets.
MIN_DRAWN_WIDTH, MIN_DRAWN_HEIGHT = 72.0, 18.0
# A picture with this many text-layer words on it already has its text.
MAX_COVERING_WORDS = 5


@dataclass
class Picture:
    box: tuple[float, float, float, float]  # x0, top, x1, bottom in points from the top left
    pixels: Any  # RGB numpy array


def page_pictures(page: Any, limits: ParseLimits, budget: int) -> list[Picture]:
    """Decoded pictures of one PDFium page worth OCR, at most ``budget``; hold the PDFium lock."""
    import numpy as np
    import pypdfium2.raw as pdfium_c

    if budget <= 0:
        return []
    height = page.get_height()
    found = []
    pixels_left = limits.image_max_pixels  # decoded pictures of one page together stay under it
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = image.get_bounds()
        if right - left < MIN_DRAWN_WIDTH or top - bottom < MIN_DRAWN_HEIGHT:
            continue
        try:
            width_px, height_px = image.get_px_size()
            if width_px < MIN_OCR_WIDTH or height_px < MIN_OCR_HEIGHT:
                continue
            if width_px * height_px > pixels_left:
                log.info("skipping a %dx%d picture in a PDF: over the pixel limit", width_px, height_px)
                continue
            pixels_left -= width_px * height_px
            pixels = np.array(image.get_bitmap(render=False).to_pil().convert("RGB"))
        except Exception as error:  # a broken picture never fails its page
            log.info("skipping an unreadable picture in a PDF: %s: %s", type(error).__name__, error)
            continue
        found.append(Picture((left, height - top, right, height - bottom), pixels))
        if len(found) >= budget:
            break
    return found


def covered_by_text(picture: Picture, words: list[Any]) -> bool:
    x0, top, x1, bottom = picture.box
    inside = 0
    for word in words:
        cx, cy = (word.x0 + word.x1) / 2, (word.top + word.bottom) / 2
        if x0 <= cx <= x1 and top <= cy <= bottom:
            inside += 1
            if inside >= MAX_COVERING_WORDS:
                return True
    return False
