"""A PDF page's words grouped into lines and runs: the units the layout analysis works on.

pdfplumber gives every word its box, font name and size. Words whose vertical middles fall
inside one another's boxes share a line; inside a line, a horizontal gap wider than
:data:`RUN_GAP_EM` of the font size starts a new *run* (a table cell, one column's part of
a line), because an ordinary space is about a quarter of an em and even justified text
rarely stretches one beyond half. Words are cut at gaps of :data:`WORD_GAP_EM`, relative
to the font size too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# A gap between letters wider than this many font sizes separates two words (papers set with
# tight spacing have gaps of ~0.2 em and no space characters; a fixed 3 pt glues them).
WORD_GAP_EM = 0.15
# A gap between words wider than this many font sizes separates two runs.
RUN_GAP_EM = 1.0
_BOLD_MARKS = ("bold", "black", "heavy", "semibold", "demi")


@dataclass(frozen=True)
class Word:
    text: str
    x0: float
    x1: float
    top: float
    bottom: float
    size: float
    bold: bool


@dataclass
class Run:
    """Words on one line with no wide gap between them."""

    words: list[Word]

    @property
    def x0(self) -> float:
        return self.words[0].x0

    @property
    def x1(self) -> float:
        return max(word.x1 for word in self.words)

    @property
    def top(self) -> float:
        return min(word.top for word in self.words)

    @property
    def bottom(self) -> float:
        return max(word.bottom for word in self.words)

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)

    @property
    def size(self) -> float:
        return max(word.size for word in self.words)

    @property
    def bold(self) -> bool:
        return all(word.bold for word in self.words)


@dataclass
class Line:
    runs: list[Run] = field(default_factory=list)

    @property
    def x0(self) -> float:
        return min(run.x0 for run in self.runs)

    @property
    def x1(self) -> float:
        return max(run.x1 for run in self.runs)

    @property
    def top(self) -> float:
        return min(run.top for run in self.runs)

    @property
    def bottom(self) -> float:
        return max(run.bottom for run in self.runs)

    @property
    def size(self) -> float:
        return max(run.size for run in self.runs)

    @property
    def text(self) -> str:
        return " ".join(run.text for run in self.runs)


def _is_bold(fontname: str) -> bool:
    name = fontname.lower().split("+", 1)[-1]  # subset prefix "ABCDEF+Arial-BoldMT"
    return any(mark in name for mark in _BOLD_MARKS)


def page_words(page: Any, holes: Sequence[tuple[float, float, float, float]] = ()) -> list[Word]:
    """The page's upright words, less those whose centre lies in one of ``holes`` (x0, top, x1, bottom)."""
    words = []
    raw_words = page.extract_words(
        extra_attrs=["size", "fontname"], keep_blank_chars=False, x_tolerance_ratio=WORD_GAP_EM
    )
    for raw in raw_words:
        if not raw.get("upright", True) or not raw["text"].strip():
            continue
        cx, cy = (raw["x0"] + raw["x1"]) / 2, (raw["top"] + raw["bottom"]) / 2
        if any(h[0] <= cx <= h[2] and h[1] <= cy <= h[3] for h in holes):
            continue
        words.append(
            Word(
                raw["text"],
                float(raw["x0"]),
                float(raw["x1"]),
                float(raw["top"]),
                float(raw["bottom"]),
                float(raw["size"]),
                _is_bold(str(raw.get("fontname", ""))),
            )
        )
    return words


def _split_runs(words: list[Word]) -> list[Run]:
    words = sorted(words, key=lambda word: word.x0)
    runs = [Run([words[0]])]
    for word in words[1:]:
        previous = runs[-1].words[-1]
        if word.x0 - previous.x1 > RUN_GAP_EM * max(word.size, previous.size):
            runs.append(Run([word]))
        else:
            runs[-1].words.append(word)
    return runs


def group_lines(words: list[Word]) -> list[Line]:
    """Words in lines, top to bottom; each line's runs left to right."""
    rows: list[list[Word]] = []
    for word in sorted(words, key=lambda w: (w.top, w.x0)):
        middle = (word.top + word.bottom) / 2
        if rows:
            top = min(w.top for w in rows[-1])
            bottom = max(w.bottom for w in rows[-1])
            row_middle = (top + bottom) / 2
            if top <= middle <= bottom or word.top <= row_middle <= word.bottom:
                rows[-1].append(word)
                continue
        rows.append([word])
    return [Line(_split_runs(row)) for row in rows]
