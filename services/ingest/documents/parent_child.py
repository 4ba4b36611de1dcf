"""Parent-child chunks: small children to embed and match, each carrying its parent section.

Small chunks match a question precisely (little unrelated text dilutes their vector), but an
answer needs the context around the matching sentence. In parent-child mode the file is first
cut into parent sections of at most ``parent_chunk_size`` characters by the ordinary splitter
(same strategy, tables with their header, heading paths), then every parent is cut into
children of at most ``chunk_size`` characters. Only children are embedded and indexed; each
carries its parent's text and number, so the gateway can hand the parent to the answer prompt
(once per parent) while citations still point at the child. A child lies wholly inside its
parent and keeps the parent's heading path.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.ingest.documents.parsers import Segment
from services.ingest.documents.splitter import TextChunk, split_segments

# Parents smaller than this are hardly more context than a child; larger ones crowd the prompt.
MIN_PARENT_CHUNK_SIZE, MAX_PARENT_CHUNK_SIZE = 100, 8_000
DEFAULT_PARENT_CHUNK_SIZE = 1_500


def check_parent_size(parent_chunk_size: int, chunk_size: int) -> None:
    """Parents must be within bounds and larger than their children."""
    if not MIN_PARENT_CHUNK_SIZE <= parent_chunk_size <= MAX_PARENT_CHUNK_SIZE:
        raise ValueError(
            f"parent_chunk_size must be between {MIN_PARENT_CHUNK_SIZE} and {MAX_PARENT_CHUNK_SIZE}, "
            f"got {parent_chunk_size}"
        )
    if parent_chunk_size <= chunk_size:
        raise ValueError(
            f"parent_chunk_size ({parent_chunk_size}) must be larger than chunk_size ({chunk_size}), "
            "the children's size"
        )


def split_parent_child(
    segments: Iterable[Segment],
    file_name: str,
    chunk_size: int,
    chunk_overlap: int,
    parent_chunk_size: int,
    *,
    splitter: str = "recursive",
    title_enhance: bool = False,
) -> list[TextChunk]:
    """Children numbered 0..n-1 over the whole file, each with ``parent_index``/``parent_text``.

    Parents do not overlap (each sentence belongs to one parent, so de-duplicating parents in
    a prompt never repeats text); children overlap by ``chunk_overlap`` within their parent.
    A parent no larger than a child becomes a single child equal to it.
    """
    check_parent_size(parent_chunk_size, chunk_size)
    parents = split_segments(
        segments, file_name, parent_chunk_size, 0, splitter=splitter, title_enhance=title_enhance
    )
    children: list[TextChunk] = []
    for parent in parents:
        # The parent is re-read as a segment of its own: tables keep their header row in
        # every child, and the parent's heading path is the children's.
        inside = split_segments(
            [Segment(parent.text, {})], file_name, chunk_size, chunk_overlap, splitter="recursive"
        )
        for child in inside:
            index = len(children)
            metadata = {**parent.metadata, "chunk_index": str(index), "parent_index": str(parent.index)}
            children.append(
                TextChunk(
                    text=child.text,
                    index=index,
                    metadata=metadata,
                    parent_index=parent.index,
                    parent_text=parent.text,
                )
            )
    return children
