"""Tables drawn without ruling lines, found by column alignment under a header line.

A borderless table is a header line of several short runs followed by lines whose runs each
fall under one header column. Column slots are cut halfway between neighbouring header
runs; every run of a body line must sit (mostly) inside one slot, so right-aligned numbers
and cells left empty on some rows still land in the right column. A line with a single run
starting outside the first column continues the cell above (a wrapped cell); anything else, or a
vertical gap wider than :data:`MAX_ROW_GAP_EM` font sizes, ends the table.

Why not pdfplumber's ``text`` strategy: measured on the evaluation PDFs it also "finds"
tables in every block of prose and key/value header (see docs/guide/formats.md), whereas a
header line of three or more short runs is rare outside tables.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from services.ingest.documents.parsers.pdf_lines import Line, Run

MIN_COLUMNS = 3
MIN_BODY_ROWS = 1
MAX_ROW_GAP_EM = 2.5
# A cell wider than this share of the page is prose, not a table cell.
MAX_CELL_SHARE = 0.35
MAX_HEADER_WORDS = 6
# A run belongs to a slot when at least this share of its width lies inside it.
MIN_INSIDE = 0.7
# A run ending this far left of the first header cell is a row label (an unnamed stub column).
STUB_MARGIN = 2.0


@dataclass
class FoundTable:
    first: int  # index of the header line
    last: int  # index of the last body line
    rows: list[list[str]]
    top: float
    bottom: float
    x0: float
    x1: float


def _is_header(line: Line, width: float) -> bool:
    if len(line.runs) < MIN_COLUMNS:
        return False
    for run in line.runs:
        if run.x1 - run.x0 > MAX_CELL_SHARE * width or len(run.words) > MAX_HEADER_WORDS:
            return False
    # A header row is set in one weight; bold labels beside plain values are a form, not a header.
    if len({run.bold for run in line.runs}) > 1:
        return False
    # A header names columns: most of its cells hold letters, not figures.
    named = sum(1 for run in line.runs if sum(ch.isalpha() for ch in run.text) >= len(run.text) / 2)
    return named >= len(line.runs) - 1


def _slots(header: Line) -> list[tuple[float, float]]:
    """Column slots; the first is a stub column for row labels left of the first header cell."""
    runs = header.runs
    cuts = [(a.x1 + b.x0) / 2 for a, b in itertools.pairwise(runs)]
    bounds = [float("-inf"), runs[0].x0 - STUB_MARGIN, *cuts, float("inf")]
    return list(itertools.pairwise(bounds))


def _slot_of(run: Run, slots: list[tuple[float, float]]) -> int | None:
    width = max(run.x1 - run.x0, 0.1)
    for index, (left, right) in enumerate(slots):
        inside = min(run.x1, right) - max(run.x0, left)
        if inside >= MIN_INSIDE * width:
            return index
    return None


def _cells(line: Line, slots: list[tuple[float, float]], width: float) -> list[str] | None:
    cells = [""] * len(slots)
    if len(line.runs) == 1:  # a wrapped cell may overflow its slot: where it starts decides
        run = line.runs[0]
        for index, (left, right) in enumerate(slots):
            if left <= run.x0 < right and run.x1 - run.x0 <= MAX_CELL_SHARE * width:
                cells[index] = run.text
                return cells
        return None
    for run in line.runs:
        if run.x1 - run.x0 > MAX_CELL_SHARE * width:
            return None
        slot = _slot_of(run, slots)
        if slot is None or cells[slot]:
            return None
        cells[slot] = run.text
    return cells


def _row_follows(lines: list[Line], position: int, slots: list[tuple[float, float]], width: float) -> bool:
    if position + 1 >= len(lines) or len(lines[position + 1].runs) < 2:
        return False
    line, after = lines[position], lines[position + 1]
    return after.top - line.bottom <= MAX_ROW_GAP_EM * line.size and _cells(after, slots, width) is not None


def find_tables(lines: list[Line], page_width: float) -> list[FoundTable]:
    """Borderless tables among ``lines`` (top to bottom), each with its header as first row."""
    found: list[FoundTable] = []
    index = 0
    while index < len(lines):
        header = lines[index]
        if not _is_header(header, page_width):
            index += 1
            continue
        slots = _slots(header)
        rows = [["", *(run.text for run in header.runs)]]
        previous = header
        last = index
        for position in range(index + 1, len(lines)):
            line = lines[position]
            if line.top - previous.bottom > MAX_ROW_GAP_EM * previous.size:
                break
            cells = _cells(line, slots, page_width)
            if cells is None:
                break
            filled = [i for i, cell in enumerate(cells) if cell]
            if len(filled) == 1 and filled[0] > 1 and len(rows) > 1:
                column = filled[0]  # a wrapped cell: its text continues the row above
                rows[-1][column] = f"{rows[-1][column]} {cells[column]}".strip()
            elif len(filled) >= 2 or (filled == [0] and _row_follows(lines, position, slots, page_width)):
                rows.append(cells)  # a lone row label counts when a full row comes next
            else:
                break
            previous, last = line, position
        if len(rows) - 1 >= MIN_BODY_ROWS:
            block = lines[index : last + 1]
            found.append(
                FoundTable(
                    index,
                    last,
                    rows,
                    min(line.top for line in block),
                    max(line.bottom for line in block),
                    min(line.x0 for line in block),
                    max(line.x1 for line in block),
                )
            )
            index = last + 1
        else:
            index += 1
    return found
