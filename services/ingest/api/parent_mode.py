"""Which parent-child setting an upload, a reindex or a new knowledge base gets.

The rules live here once: a request that says ``parent_child`` decides (true: on, with its
``parent_chunk_size``, else the fallback's, else the default); one that does not say inherits
the fallback (the knowledge base's for an upload, the last job's for a reindex), and a bare
``parent_chunk_size`` means "on, with this size". The result is the parents' size bound,
0 for plain chunks, validated against the children's ``chunk_size``.
"""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.ingest.documents.parent_child import DEFAULT_PARENT_CHUNK_SIZE, check_parent_size


def parent_chunk_size(asked: bool | None, asked_size: int, fallback: int, chunk_size: int) -> int:
    """The parents' size bound for this request (0: plain chunks); a bad size is INVALID_ARGUMENT."""
    if asked_size < 0:
        raise InvalidArgument("parent_chunk_size must not be negative")
    if asked is False:
        return 0
    if asked is None and not asked_size and not fallback:
        return 0
    size = asked_size or fallback or DEFAULT_PARENT_CHUNK_SIZE
    try:
        check_parent_size(size, chunk_size)
    except ValueError as error:
        raise InvalidArgument(str(error)) from None
    return size
