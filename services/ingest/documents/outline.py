"""Where each offset of a text sits: its heading path and, inside a Markdown table, its header.

Parsers keep structure in the text itself (Markdown ``#`` headings, ``| a | b |`` tables), so
one scan of the text is enough for every splitter to label chunks with their heading path and
to keep table rows together with the header that names their columns. Lines inside fenced
code blocks are never headings (``# comment`` in a notebook cell is code).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from services.ingest.documents.title_enhance import is_possible_title

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|(\s*:?-{3,}:?\s*\|)+\s*$")
# Level given to numbered plain-text titles: below every Markdown heading level.
PLAIN_TITLE_LEVEL = 7


@dataclass(frozen=True)
class Heading:
    offset: int
    level: int
    title: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    start: int  # first character of the header row
    body: int  # first character after the separator row
    end: int  # one past the last row's newline (or the text's end)
    header: str  # header row and separator row, newline-joined


@dataclass
class Outline:
    """Headings and tables of one text; ``inherited`` is the heading stack before it begins."""

    text: str
    inherited: list[tuple[int, str]] = field(default_factory=list)
    plain_titles: bool = False
    headings: list[Heading] = field(init=False, default_factory=list)
    tables: list[Table] = field(init=False, default_factory=list)
    stack: list[tuple[int, str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.stack = list(self.inherited)
        lines = self.text.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))
        in_fence = False
        index = 0
        while index < len(lines):
            line = lines[index].rstrip("\r\n")
            if _FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence:
                if (
                    _TABLE_ROW.match(line)
                    and index + 1 < len(lines)
                    and _TABLE_RULE.match(lines[index + 1].rstrip("\r\n"))
                ):
                    end = index + 2
                    while end < len(lines) and _TABLE_ROW.match(lines[end].rstrip("\r\n")):
                        end += 1
                    header = line.strip() + "\n" + lines[index + 1].strip()
                    self.tables.append(Table(offsets[index], offsets[index + 2], offsets[end], header))
                    index = end
                    continue
                if match := _ATX.match(line):
                    self._push(offsets[index], len(match.group(1)), match.group(2).strip())
                elif self.plain_titles and is_possible_title(line):
                    self._push(offsets[index], PLAIN_TITLE_LEVEL, line.strip())
            index += 1
        self._heading_offsets = [heading.offset for heading in self.headings]

    def _push(self, offset: int, level: int, title: str) -> None:
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title))
        self.headings.append(Heading(offset, level, title, tuple(t for _, t in self.stack)))

    def path_at(self, offset: int) -> tuple[str, ...]:
        """Heading titles in force at ``offset``, outermost first."""
        position = bisect.bisect_right(self._heading_offsets, offset)
        if position == 0:
            return tuple(title for _, title in self.inherited)
        return self.headings[position - 1].path

    def main_path(self, start: int, end: int) -> tuple[str, ...]:
        """Heading path of the section that covers most of ``[start, end)``.

        A recursive chunk may begin at the tail of one section and run into the next; it is
        labelled with the section most of its text belongs to (ties: the earlier one).
        """
        first = bisect.bisect_right(self._heading_offsets, start)
        last = bisect.bisect_left(self._heading_offsets, end)
        best, best_length = self.path_at(start), -1
        position = start
        for index in range(first, last):
            cut = self._heading_offsets[index]
            if cut - position > best_length:
                best, best_length = self.path_at(position), cut - position
            position = cut
        if end - position > best_length:
            best = self.path_at(position)
        return best
