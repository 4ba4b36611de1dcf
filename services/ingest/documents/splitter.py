"""A Chinese-aware recursive splitter: chunks of at most ``chunk_size`` characters.

Text is cut at the coarsest boundary that makes pieces small enough: paragraphs, then lines,
then sentence ends (``。！？!?`` and an English ``. ``), then clause marks (``；;``), then
commas (``，,、``), and only as a last resort between characters. Pieces keep their boundary
mark and are at most ``chunk_size - chunk_overlap`` long (room for the overlap), then are
packed greedily into chunks; consecutive chunks share up to ``chunk_overlap`` characters
(whole trailing pieces when they fit, else the tail of the previous chunk) so an answer that
straddles a cut is still found whole in one chunk. Sizes count characters, not
tokens: one CJK character is roughly one token for the embedding models we ship.

:func:`split_segments` is what the pipeline calls. It labels every chunk with the heading
path it sits under (from the Markdown headings parsers keep), keeps Markdown tables whole
row by row with the header row repeated at the top of every table chunk, and offers two
strategies: ``recursive`` (the default, above, over the whole text) and ``markdown``
(sections cut at headings first, so no chunk mixes two sections), plus optional title
enhancement (:mod:`services.ingest.documents.title_enhance`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from services.ingest.documents.markdown_splitter import markdown_sections
from services.ingest.documents.outline import Outline, Table
from services.ingest.documents.parsers import Segment
from services.ingest.documents.title_enhance import with_title

# Each pattern matches the end of a piece (the mark stays with the text before it).
_LEVELS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n"),
    re.compile(r"[。！？!?…]+[”’」』）)\"']*|\.(?=\s)\s*"),
    re.compile(r"[；;]"),
    re.compile(r"[，,、]"),
)


@dataclass(frozen=True)
class TextChunk:
    text: str
    index: int
    metadata: dict[str, str] = field(default_factory=dict)
    # Parent-child chunks (:mod:`services.ingest.documents.parent_child`): the number of the
    # parent section this child belongs to in its file, and that section's text.
    parent_index: int = -1
    parent_text: str = ""


def _cut_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _pieces(text: str, size: int, level: int = 0) -> list[str]:
    """Split ``text`` into pieces of at most ``size`` characters, preferring coarse boundaries."""
    if len(text) <= size:
        return [text]
    if level == len(_LEVELS):
        return [text[i : i + size] for i in range(0, len(text), size)]
    parts = _cut_after(text, _LEVELS[level])
    if len(parts) == 1:
        return _pieces(text, size, level + 1)
    pieces: list[str] = []
    for part in parts:
        pieces.extend([part] if len(part) <= size else _pieces(part, size, level + 1))
    return pieces


def _overlap_prefix(window: list[str], previous: str, overlap: int, room: int) -> list[str]:
    """What the next chunk starts with: trailing pieces within ``overlap``, else a tail cut."""
    budget = min(overlap, room)
    if budget <= 0:
        return []
    kept: list[str] = []
    total = 0
    for piece in reversed(window):
        if total + len(piece) > budget:
            break
        kept.insert(0, piece)
        total += len(piece)
    if kept:
        return kept
    tail = previous[-budget:].lstrip()
    return [tail] if tail else []


def _check_sizes(chunk_size: int, chunk_overlap: int) -> None:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap}")


def split_text(text: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Chunks of ``text``, each 1..chunk_size characters after stripping, never empty."""
    _check_sizes(chunk_size, chunk_overlap)
    chunks: list[str] = []
    window: list[str] = []
    length = 0
    fresh = False  # whether the window holds anything beyond the carried-over overlap
    # Pieces leave room for the overlap, so every chunk after the first can carry one.
    for piece in _pieces(text, chunk_size - chunk_overlap):
        if window and length + len(piece) > chunk_size:
            if fresh:
                chunks.append("".join(window))
            window = _overlap_prefix(
                window, chunks[-1] if chunks else "", chunk_overlap, chunk_size - len(piece)
            )
            length = sum(len(p) for p in window)
            fresh = False
        window.append(piece)
        length += len(piece)
        fresh = fresh or bool(piece.strip())
    if window and fresh:
        chunks.append("".join(window))
    return [stripped for chunk in chunks if (stripped := chunk.strip())]


# A section is a [start, end) span of a segment's text; a strategy says where they are cut.
Strategy = Callable[[Outline], list[tuple[int, int]]]


def _whole_text(outline: Outline) -> list[tuple[int, int]]:
    return [(0, len(outline.text))]


SPLITTERS: dict[str, Strategy] = {"recursive": _whole_text, "markdown": markdown_sections}


def _located(text: str, offset: int, chunks: list[str]) -> Iterator[tuple[int, str]]:
    """Each chunk with its offset in the segment (chunks are in order, substrings of ``text``)."""
    cursor = 0
    for chunk in chunks:
        found = text.find(chunk, cursor)
        position = found if found >= 0 else cursor
        cursor = position + 1  # the next chunk starts later (repeated text must not match here)
        yield offset + position, chunk


def _table_chunks(
    text: str, offset: int, table: Table, size: int, overlap: int, lead: tuple[int, str] | None = None
) -> list[tuple[int, str]]:
    """Rows packed under a repeated header row, each chunk at most ``size`` characters.

    ``lead`` is short text just before the table (a sheet name, a caption) that opens the
    first chunk instead of standing alone. Falls back to plain splitting when the header
    alone leaves too little room for rows, and splits a single over-long row like text (it
    then stands without the header).
    """
    budget = size - len(table.header) - 1
    if budget < size // 4:
        results = list(_located(text, offset, split_text(text, size, overlap)))
        return [lead, *results] if lead else results
    results = []
    group: list[str] = []
    group_offset = length = 0
    if lead:
        group_offset, length = lead[0], len(lead[1]) + 2

    def flush() -> None:
        nonlocal lead
        if group:
            chunk = table.header + "\n" + "\n".join(group)
            results.append((lead[0], f"{lead[1]}\n\n{chunk}") if lead else (group_offset, chunk))
            lead = None

    position = offset
    for line in text.splitlines(keepends=True):
        row = line.strip()
        row_offset = position
        position += len(line)
        if not row or row_offset < table.body:
            continue  # the header and separator rows: repeated on every chunk instead
        if len(row) > budget:
            flush()
            group, length = [], 0
            if lead:  # nothing flushed it: it still comes first
                results.append(lead)
                lead = None
            results.extend(_located(row, row_offset, split_text(row, size, overlap)))
            continue
        if group and length + len(row) + 1 > budget:
            flush()
            group, length = [], 0
        if not group and lead is None:
            group_offset = row_offset
        group.append(row)
        length += len(row) + 1
    flush()
    if lead:
        results.insert(0, lead)
    if not results and text.strip():  # a header with no body rows
        results.append((offset, text.strip()))
    return results


def _span_chunks(outline: Outline, start: int, end: int, size: int, overlap: int) -> list[tuple[int, str]]:
    """Chunks of ``outline.text[start:end]``: tables row-wise with their header, the rest recursively."""
    text = outline.text
    results: list[tuple[int, str]] = []
    position = start
    for table in outline.tables:
        if table.end <= start or table.start >= end:
            continue
        table_start, table_end = max(table.start, start), min(table.end, end)
        lead = None
        if table_start > position:
            before = text[position:table_start]
            results.extend(_located(before, position, split_text(before, size, overlap)))
            if results and results[-1][0] >= position and len(results[-1][1]) <= size // 4:
                lead = results.pop()
        results.extend(_table_chunks(text[table_start:table_end], table_start, table, size, overlap, lead))
        position = table_end
    if position < end:
        rest = text[position:end]
        results.extend(_located(rest, position, split_text(rest, size, overlap)))
    return results


def split_segments(
    segments: Iterable[Segment],
    file_name: str,
    chunk_size: int,
    chunk_overlap: int,
    *,
    splitter: str = "recursive",
    title_enhance: bool = False,
) -> list[TextChunk]:
    """Chunk every segment separately (a chunk never spans two PDF pages), numbering them 0..n-1.

    Each chunk's metadata has the segment's (``page``, ``sheet``, ``member`` ...), plus
    ``file``, ``chunk_index`` and, under any heading, ``heading`` (the path joined with
    " > "). With ``title_enhance`` numbered plain-text title lines count as headings too and
    every chunk starts with its heading path (which comes on top of ``chunk_size``).
    """
    strategy = SPLITTERS.get(splitter)
    if strategy is None:
        raise ValueError(f"unknown splitter '{splitter}' (choose one of: {', '.join(sorted(SPLITTERS))})")
    _check_sizes(chunk_size, chunk_overlap)
    chunks: list[TextChunk] = []
    inherited: list[tuple[int, str]] = []
    member: str | None = None
    for segment in segments:
        if segment.metadata.get("member") != member:  # headings never carry across zip members
            inherited, member = [], segment.metadata.get("member")
        outline = Outline(segment.text, inherited, plain_titles=title_enhance)
        inherited = outline.stack
        base = (segment.metadata["heading"],) if segment.metadata.get("heading") else ()
        for start, end in strategy(outline):
            for offset, text in _span_chunks(outline, start, end, chunk_size, chunk_overlap):
                path = base + outline.main_path(offset, offset + len(text))
                if title_enhance:
                    text = with_title(text, path)
                index = len(chunks)
                metadata = {**segment.metadata, "file": file_name, "chunk_index": str(index)}
                if path:
                    metadata["heading"] = " > ".join(path)
                chunks.append(TextChunk(text=text, index=index, metadata=metadata))
    return chunks
