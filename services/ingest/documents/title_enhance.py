"""Title enhancement: find short title lines in plain text and prefix chunks with their titles.

A chunk cut from the middle of a section ("the deadline is 30 days") does not say what it is
about; prefixing the title it sits under ("3.2 年假申请") lets both the embedding and the
lexical index match questions that name the topic. Markdown headings are titles already;
for text without markup (PDF text layers, plain text) :func:`is_possible_title` recognises
numbered title lines with the rules of Chatchat's ``zh_title_enhance``: short, no closing
punctuation, mostly letters, and a number (Arabic or Chinese) in its first five characters.
"""

from __future__ import annotations

import re

TITLE_MAX_CHARS = 20
_ENDING_PUNCTUATION = tuple(",.;:!?，。；：！？、…")
_NON_ALPHA_MAX_RATIO = 0.5


def _non_alpha_ratio(text: str) -> float:
    visible = [ch for ch in text if not ch.isspace()]
    if not visible:
        return 1.0
    return sum(1 for ch in visible if not ch.isalpha()) / len(visible)


def is_possible_title(line: str) -> bool:
    """Whether a whole line of plain text reads as a numbered section title."""
    text = line.strip()
    if not text or len(text) > TITLE_MAX_CHARS or text.endswith(_ENDING_PUNCTUATION):
        return False
    if text.startswith("|") or text.isnumeric():
        return False
    if _non_alpha_ratio(text) > _NON_ALPHA_MAX_RATIO:
        return False
    return any(ch.isnumeric() for ch in text[:5])


_HEADING_MARKS = re.compile(r"^#{1,6}\s+")


def with_title(text: str, path: tuple[str, ...]) -> str:
    """``text`` prefixed with its title path, unless it already starts with that title."""
    if not path:
        return text
    first_line = _HEADING_MARKS.sub("", text.split("\n", 1)[0]).strip()
    if first_line == path[-1]:
        path = path[:-1]
    return f"{' > '.join(path)}\n{text}" if path else text
