"""Headings of a PDF from font size and weight, and the page text written with them.

A PDF has no heading markup, only bigger or bolder type. The body size is the size most of
the document's characters are set in; a short line set at least :data:`SIZE_RATIO` larger is
a heading, its level given by its size (the largest size is level 1) unless that size sets
much of the text (a form or sidebar set larger than the notes), and a short line set
wholly in bold at body size is a heading one level below the smallest sized one. Headings
become Markdown ``#`` lines, exactly as the DOCX parser writes them, so the splitter puts
them in each chunk's ``heading`` path; a title set over two lines is joined into one.
"""

from __future__ import annotations

import re
from collections import Counter

from services.ingest.documents.parsers.base import normalise
from services.ingest.documents.parsers.pdf_layout import Block
from services.ingest.documents.parsers.pdf_lines import Line

_NUMBERING = re.compile(r"^(\d+(\.\d+)*\.?|[IVXivx]+\.|[A-Z]\.|第.{1,4}[章节部分])$")
SIZE_RATIO = 1.15
MAX_HEADING_CHARS = 120
MAX_HEADING_WORDS = 16
# A gap between two lines wider than this many font sizes starts a new paragraph.
PARAGRAPH_GAP_EM = 0.8
# A heading size sets at most this share of the characters the body size sets.
MAX_HEADING_SHARE = 0.3


def _rounded(size: float) -> float:
    return round(size * 2) / 2


class HeadingStyle:
    """What counts as a heading in one document, learnt from all its pages."""

    def __init__(self, pages: list[list[Block]]) -> None:
        weights: Counter[float] = Counter()
        for blocks in pages:
            for block in blocks:
                if block.line is not None:
                    for run in block.line.runs:
                        for word in run.words:
                            weights[_rounded(word.size)] += len(word.text)
        self.body = weights.most_common(1)[0][0] if weights else 0.0
        # A size that sets a good share of the text is a second body size (a form, a sidebar).
        sizes = {
            _rounded(block.line.size)
            for blocks in pages
            for block in blocks
            if block.line is not None and self._shape_ok(block.line) and self._larger(block.line)
        }
        sizes = {size for size in sizes if weights[size] <= MAX_HEADING_SHARE * weights[self.body]}
        self.levels = {size: min(level, 6) for level, size in enumerate(sorted(sizes, reverse=True), start=1)}
        self.bold_level = min(len(self.levels) + 1, 6)

    def _larger(self, line: Line) -> bool:
        smallest = min(word.size for run in line.runs for word in run.words)
        return self.body > 0 and smallest >= SIZE_RATIO * self.body

    @staticmethod
    def _shape_ok(line: Line) -> bool:
        text = line.text.strip()
        return (
            # label and value apart on one line are a form row; "2.1   Method" is a heading
            (len(line.runs) == 1 or (len(line.runs) == 2 and _NUMBERING.match(line.runs[0].text) is not None))
            and 2 <= len(text) <= MAX_HEADING_CHARS
            and len(text.split()) <= MAX_HEADING_WORDS
            and any(ch.isalpha() for ch in text)
            and not text.endswith((".", ",", ";", "，", "。", "；"))
        )

    def level(self, line: Line) -> int | None:
        if not self._shape_ok(line):
            return None
        if self._larger(line):
            return self.levels.get(_rounded(line.size))
        if all(run.bold for run in line.runs) and line.size >= self.body - 0.25:
            return self.bold_level
        return None


def render(blocks: list[Block], style: HeadingStyle) -> str:
    """The page's text: paragraphs separated by blank lines, headings as ``#`` lines."""
    parts: list[str] = []
    paragraph: list[str] = []
    previous: Block | None = None
    heading: tuple[int, list[str]] | None = None
    heading_end = 0.0

    def flush() -> None:
        nonlocal paragraph, heading
        if paragraph:
            parts.append("\n".join(paragraph))
            paragraph = []
        if heading is not None:
            parts.append("#" * heading[0] + " " + " ".join(heading[1]))
            heading = None

    for block in blocks:
        line = block.line
        if line is None:
            flush()
            parts.append(block.text)
            previous = None
            continue
        level = style.level(line)
        if level is not None:
            same = (
                heading is not None
                and heading[0] == level
                and level != style.bold_level  # only a large title wraps over lines
                and line.top - heading_end < line.size
                and sum(len(part) for part in heading[1]) + len(line.text) <= MAX_HEADING_CHARS
            )
            if same and heading is not None:
                heading[1].append(line.text)
            else:
                flush()
                heading = (level, [line.text])
            heading_end = line.bottom
            previous = None
            continue
        if heading is not None:
            flush()
        gap = line.top - previous.bottom if previous is not None else 0.0
        if previous is None or block.column != previous.column or gap > PARAGRAPH_GAP_EM * line.size:
            flush()
        paragraph.append(line.text)
        previous = block
    flush()
    return normalise("\n\n".join(part for part in parts if part.strip()))
