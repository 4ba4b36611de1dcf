"""Heading-aware sections: cut a text at its headings before any size-based splitting.

With the recursive splitter a chunk may straddle the end of one section and the start of
the next, mixing two topics in one vector; cutting at headings first keeps every chunk
within one section (LangChain's ``MarkdownHeaderTextSplitter`` does the same, but keeps
the heading line in the text here, so the chunk still says what it is about). A heading
with no text of its own before the next one (``# Part I`` then ``## Chapter 1``) joins the
section after it instead of becoming a chunk of its own.
"""

from __future__ import annotations

from services.ingest.documents.outline import Outline


def markdown_sections(outline: Outline) -> list[tuple[int, int]]:
    """[start, end) spans of ``outline.text``, one per heading section (plus any preamble)."""
    text = outline.text
    cuts = [0, *(h.offset for h in outline.headings if h.offset > 0), len(text)]
    heading_offsets = {h.offset for h in outline.headings}
    sections: list[tuple[int, int]] = []
    start = 0
    for end in cuts[1:]:
        body = text[start:end].strip().split("\n", 1)
        heading_only = start in heading_offsets and (len(body) == 1 or not body[1].strip())
        if heading_only and end < len(text):
            continue  # keep ``start``: this heading opens the next section
        if text[start:end].strip():
            sections.append((start, end))
        start = end
    return sections
