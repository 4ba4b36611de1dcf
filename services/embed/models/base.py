"""What the local backend needs from a bundled model: a blocking, batched encoder."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.embed.domain import EmbedKind


class SentenceEncoder(Protocol):
    """A loaded model. ``encode`` blocks; it is called from at most ``calls`` threads at once
    (1: never concurrently)."""

    model_id: str
    dimension: int
    calls: int

    def encode(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        """Return a ``(len(texts), dimension)`` float32 array."""
        ...
