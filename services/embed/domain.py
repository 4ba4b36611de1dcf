"""Domain types of the embed service and the request checks every backend relies on.

Validation lives here, before any backend runs, so every backend sees the same clean input
and every caller gets the same precise INVALID_ARGUMENT message, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from services.common.errors import InvalidArgument
from zhiku.v1 import embed_pb2


class EmbedKind(StrEnum):
    """Which side of an asymmetric model a text is on (e5 and bge prefix them differently)."""

    QUERY = "query"
    PASSAGE = "passage"

    @classmethod
    def from_pb(cls, value: int) -> EmbedKind:
        # UNSPECIFIED is documented as PASSAGE: ingest is the bulk caller and may omit it.
        if value in (embed_pb2.EMBED_KIND_UNSPECIFIED, embed_pb2.EMBED_KIND_PASSAGE):
            return cls.PASSAGE
        if value == embed_pb2.EMBED_KIND_QUERY:
            return cls.QUERY
        raise InvalidArgument(f"kind {value} is not a known EmbedKind (use QUERY or PASSAGE)")


def validate_texts(texts: Sequence[str], max_texts: int, max_chars: int) -> list[str]:
    """Return the texts as a list, or raise InvalidArgument naming the first bad one."""
    if not texts:
        raise InvalidArgument(f"texts is empty: send between 1 and {max_texts} texts")
    if len(texts) > max_texts:
        raise InvalidArgument(
            f"too many texts: {len(texts)} in one call, limit {max_texts}; split the request"
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise InvalidArgument(f"texts[{index}] is empty or whitespace only")
        if len(text) > max_chars:
            raise InvalidArgument(
                f"texts[{index}] has {len(text)} characters, limit {max_chars}; split it first"
            )
    return list(texts)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Float32 rows of unit length: the contract callers rely on to score by dot product.

    Backends already normalise, but re-normalising costs microseconds and keeps the promise
    even for a TEI started without normalisation or a model that drifts by rounding.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("the model produced non-finite values (NaN or inf)")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: np.ndarray = matrix / np.maximum(norms, np.float32(1e-12))
    return unit
