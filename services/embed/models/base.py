"""What the local backend needs from a bundled model: a blocking, batched encoder."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.embed.domain import EmbedKind


class SentenceEncoder(Protocol):
    """A loaded model. ``encode`` blocks and is never called from two threads at once."""

    model_id: str
    dimension: int

    def encode(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        """Return a ``(len(texts), dimension)`` float32 array."""
        ...
