"""A Chinese-aware recursive splitter: chunks of at most ``chunk_size`` characters.

Text is cut at the coarsest boundary that makes pieces small enough: paragraphs, then lines,
then sentence ends (``。！？!?`` and an English ``. ``), then clause marks (``；;``), then
commas (``，,、``), and only as a last resort between characters. Pieces keep their boundary
mark and are at most ``chunk_size - chunk_overlap`` long (room for the overlap), then are
packed greedily into chunks; consecutive chunks share up to ``chunk_overlap`` characters
(whole trailing pieces when they fit, else the tail of the previous chunk) so an answer that
straddles a cut is still found whole in one chunk. Sizes count characters, not
tokens: one CJK character is roughly one token for the embedding models we ship.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.ingest.parsers import Segment

# Each pattern matches the end of a piece (the mark stays with the text before it).
_LEVELS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n"),
    re.compile(r"[。！？!?…]+[”’」』）)\"']*|\.(?=\s)\s*"),
    re.compile(r"[；;]"),
    re.compile(r"[，,、]"),
)


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int
    metadata: dict[str, str] = field(default_factory=dict)


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


def split_text(text: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Chunks of ``text``, each 1..chunk_size characters after stripping, never empty."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap}")
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


def split_segments(
    segments: Iterable[Segment], file_name: str, chunk_size: int, chunk_overlap: int
) -> list[Chunk]:
    """Chunk every segment separately (a chunk never spans two PDF pages), numbering them 0..n-1."""
    chunks: list[Chunk] = []
    for segment in segments:
        for text in split_text(segment.text, chunk_size, chunk_overlap):
            index = len(chunks)
            metadata = {**segment.metadata, "file": file_name, "chunk_index": str(index)}
            chunks.append(Chunk(text=text, index=index, metadata=metadata))
    return chunks
