"""Reading order of a PDF page: columns, tables and pictures placed where a reader meets them.

A PDF's text layer is in drawing order, which for a two-column page often interleaves the
columns line by line ("left line 1 right line 1 left line 2 ..."). The page is rebuilt from
word boxes instead (:mod:`pdf_lines`):

1. Tables come out first, whole: ruled ones from pdfplumber's finder (:mod:`pdf_tables`),
   borderless ones by column alignment (:mod:`pdf_borderless`), as Markdown blocks.
2. A *gutter* is looked for: a vertical line in the middle band of the page that no run
   crosses while at least :data:`MIN_COLUMN_RUNS` wide runs (real text lines, not table
   cells) lie wholly on each side of it. This is the classic whitespace-cut of XY-cut
   layout analysis restricted to one cut, which is what two-column papers, newsletters and
   manuals need.
3. Top to bottom, anything that crosses the gutter (a title, an abstract, a wide table or
   figure) is a full-width block kept in place; between two such blocks the left column is
   read to its end, then the right one.

Pictures with text (OCRed by :mod:`pdf_images`) take part as blocks at their position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.ingest.documents.parsers.base import markdown_table
from services.ingest.documents.parsers.pdf_borderless import find_tables
from services.ingest.documents.parsers.pdf_lines import Line, Run, group_lines, page_words
from services.ingest.documents.parsers.pdf_tables import Box, ruled_tables

# The gutter is looked for between these shares of the page width.
GUTTER_BAND = (0.3, 0.7)
# A run at least this share of the page wide is a line of text (table cells are narrower).
WIDE_RUN_SHARE = 0.2
MIN_COLUMN_RUNS = 3
# At most this share of the column lines may cross a candidate gutter.
MAX_CROSSING_SHARE = 0.25


@dataclass
class Block:
    """One item in reading order: a line of text, or a ready Markdown table / picture text."""

    top: float
    bottom: float
    x0: float
    x1: float
    line: Line | None = None
    text: str = ""
    column: int = 0  # 0: full width, 1: left column, 2: right column


def find_gutter(runs: list[Run], width: float) -> float | None:
    """The x of the gap between two text columns, or None for a single-column page."""
    wide = [run for run in runs if run.x1 - run.x0 >= WIDE_RUN_SHARE * width]
    if len(wide) < 2 * MIN_COLUMN_RUNS:
        return None
    best: tuple[float, list[float]] = (0.0, [])
    x = GUTTER_BAND[0] * width
    while x <= GUTTER_BAND[1] * width:
        left = sum(1 for run in wide if run.x1 <= x)
        right = sum(1 for run in wide if run.x0 >= x)
        crossing = sum(1 for run in runs if run.x0 < x < run.x1)
        side = min(left, right)
        if side >= MIN_COLUMN_RUNS and crossing <= MAX_CROSSING_SHARE * side:
            score = side - 4 * crossing
            if score > best[0]:
                best = (score, [x])
            elif score == best[0]:
                best[1].append(x)
        x += 1.0
    if not best[1]:
        return None
    return best[1][len(best[1]) // 2]


def _line_block(runs: list[Run], column: int) -> Block:
    line = Line(runs)
    return Block(line.top, line.bottom, line.x0, line.x1, line=line, column=column)


def _columns(lines: list[Line], gutter: float | None) -> list[Block]:
    blocks = []
    for line in lines:
        if gutter is None or any(run.x0 < gutter < run.x1 for run in line.runs):
            blocks.append(_line_block(line.runs, 0))
            continue
        left = [run for run in line.runs if run.x1 <= gutter]
        right = [run for run in line.runs if run.x0 >= gutter]
        if left:
            blocks.append(_line_block(left, 1))
        if right:
            blocks.append(_line_block(right, 2))
    return blocks


def _ordered(blocks: list[Block], gutter: float | None) -> list[Block]:
    blocks = sorted(blocks, key=lambda block: (block.top, block.x0))
    if gutter is None:
        return blocks
    ordered: list[Block] = []
    left: list[Block] = []
    right: list[Block] = []
    for block in blocks:
        if block.column == 0 and block.x0 < gutter < block.x1:
            ordered.extend(left + right)
            left, right = [], []
            ordered.append(block)
        elif block.column == 2 or (block.column == 0 and block.x0 >= gutter):
            block.column = 2
            right.append(block)
        else:
            block.column = 1
            left.append(block)
    return ordered + left + right


def page_blocks(
    lines: list[Line], width: float, placed: list[Block], *, find_borderless: bool = True
) -> list[Block]:
    """The page in reading order. ``placed``: ruled tables and pictures, already as text blocks."""
    blocks = list(placed)
    if find_borderless:
        consumed: set[int] = set()
        for table in find_tables(lines, width):
            consumed.update(range(table.first, table.last + 1))
            text = markdown_table(table.rows)
            blocks.append(Block(table.top, table.bottom, table.x0, table.x1, text=text))
        lines = [line for index, line in enumerate(lines) if index not in consumed]
    gutter = find_gutter([run for line in lines for run in line.runs], width)
    return _ordered(blocks + _columns(lines, gutter), gutter)


def analyse_page(
    page: Any, pictures: list[tuple[Box, str]], *, ruled: bool, find_borderless: bool = True
) -> list[Block]:
    """A pdfplumber page in reading order; ``pictures``: (box, ``[image] ...`` line) of its pictures."""
    placed = [Block(box[1], box[3], box[0], box[2], text=line) for box, line in pictures]
    tables = ruled_tables(page) if ruled else []
    for box, rows in tables:
        placed.append(Block(box[1], box[3], box[0], box[2], text=markdown_table(rows)))
    words = page_words(page, [box for box, _ in tables])
    return page_blocks(group_lines(words), float(page.width), placed, find_borderless=find_borderless)
