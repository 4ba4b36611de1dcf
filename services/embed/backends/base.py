"""The small interface every embed backend implements; the servicer knows nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from services.embed import rerank
from services.embed.domain import EmbedKind


class EmbedBackend(ABC):
    """Turns validated texts into L2-normalised float32 vectors.

    ``model`` and ``dimension`` are known once ``start`` has returned (a model loaded, or a
    remote server asked); calls before that raise DependencyUnavailable so clients retry.
    """

    name: str
    model: str = ""
    dimension: int = 0
    # Embed calls worth running at once: the dynamic batcher keeps this many in flight and
    # merges what waits meanwhile (1 for an in-process model with one model thread).
    max_concurrent_calls: int = 1

    @abstractmethod
    async def start(self) -> None:
        """Load the model or reach the server; raise if the backend cannot serve."""

    @abstractmethod
    async def embed(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        """Return a ``(len(texts), dimension)`` float32 array of unit rows, in input order."""

    async def rerank(self, query: str, passages: list[str], lexical_weight: float) -> list[float]:
        """Relevance of each passage to the query in [0, 1], in order.

        Default: the local blend of this backend's embeddings and lexical overlap
        (:mod:`services.embed.rerank`); backends with a real reranker override it.
        """
        query_vector = (await self.embed([query], EmbedKind.QUERY))[0]
        passage_vectors = await self.embed(passages, EmbedKind.PASSAGE)
        return rerank.blend(query_vector, passage_vectors, query, passages, lexical_weight)

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release threads, connections, files."""
