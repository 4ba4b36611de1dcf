"""Running headers, footers and page numbers of a PDF, kept once instead of on every page.

A header line ("知库科技 内部资料") or footer ("第 3 页 共 12 页", "Confidential - Page 3") printed on
every page lands in every chunk of the text layer: it dilutes each chunk's embedding, gives
keyword search a match on every page, and splits sentences that run across a page break.

A line counts as running when, with its digits masked (so page numbers compare equal), it is
among the first or last :data:`EDGE_LINES` lines of at least :data:`MIN_SHARE` of the text
pages, and of at least :data:`MIN_PAGES` of them. It is kept where it first appears (a title
printed as a header still says what the document is) and removed from the other pages' edges;
a line in the middle of a page, and a table row, are never touched.
"""

from __future__ import annotations

import re
from collections import Counter

from services.ingest.documents.parsers.base import Segment, normalise

EDGE_LINES = 2
MIN_SHARE = 0.6
MIN_PAGES = 3
_DIGITS = re.compile(r"\d+")


def _key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()))


def _edges(lines: list[str]) -> set[int]:
    """Indexes of the first and last non-empty lines: EDGE_LINES each, fewer on a short page so
    top and bottom never reach its middle (a three-line page has one header, one footer)."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    count = max(1, min(EDGE_LINES, len(filled) // 3))
    return set(filled[:count] + filled[-count:])


def drop_running_lines(segments: list[Segment]) -> list[Segment]:
    """The pages without their running headers and footers (OCRed pages are compared too)."""
    pages = [segment.text.split("\n") for segment in segments]
    seen: Counter[str] = Counter()
    for lines in pages:
        seen.update({_key(lines[i]) for i in _edges(lines)})
    needed = max(MIN_PAGES, MIN_SHARE * len(pages))
    # Markdown table rows are left alone: a table's header row repeated on each page it spans
    # is what makes those rows readable.
    running = {
        key for key, count in seen.items() if count >= needed and key.strip() and not key.startswith("|")
    }
    if not running:
        return segments
    kept_once: set[str] = set()
    cleaned = []
    for segment, lines in zip(segments, pages, strict=True):
        drop = set()
        for i in _edges(lines):
            key = _key(lines[i])
            if key in running:
                if key in kept_once:
                    drop.add(i)
                kept_once.add(key)
        text = normalise("\n".join(line for i, line in enumerate(lines) if i not in drop))
        if text:
            cleaned.append(Segment(text, segment.metadata))
    return cleaned
