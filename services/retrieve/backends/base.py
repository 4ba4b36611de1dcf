"""The small interface every vector store backend implements.

Collection names arrive validated (:mod:`services.common.names`) and records well-formed
(:mod:`services.retrieve.domain`); a backend checks existence (NotFound) and dimensions
(InvalidArgument) and returns scores already mapped by :mod:`services.retrieve.scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.retrieve.domain import CollectionStats, Hit, PointRecord, SearchQuery


class RetrieveBackend(Protocol):
    name: str

    async def start(self) -> None:
        """Acquire the store (open files, connect); runs before the service reports SERVING."""

    async def close(self) -> None:
        """Release the store; runs after the gRPC server stopped taking calls."""

    async def ensure_collection(self, collection: str, dimension: int) -> bool:
        """Create the collection if missing; True when created. A different dimension fails."""

    async def has_sparse(self, collection: str) -> bool:
        """Whether the existing collection stores sparse vectors (False: made before hybrid
        search, dense only); NotFound for a missing one."""

    async def upsert(self, collection: str, points: Sequence[PointRecord]) -> int:
        """Insert or overwrite points by id; returns how many were written."""

    async def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        """Best first in ``query.mode`` (dense, sparse or hybrid RRF), scores in [0, 1] as
        :mod:`services.retrieve.scores` maps them, only hits with score >= score_threshold.
        A collection without a sparse vector serves hybrid as dense and refuses sparse."""

    async def delete_by_file(
        self,
        collection: str,
        file_name: str,
        keep: tuple[tuple[str, str], ...] = (),
        only: tuple[tuple[str, str], ...] = (),
    ) -> int:
        """Remove the points of one file, except those whose metadata has any ``keep`` pair
        (the generation just indexed) and, when ``only`` is given, only those whose metadata
        has all ``only`` pairs; returns how many were removed."""

    async def set_file_acl(self, collection: str, file_name: str, acl: tuple[str, ...]) -> int:
        """Replace the ``acl`` payload of every point of one file (no vectors touched);
        returns how many points it covered."""

    async def drop_collection(self, collection: str) -> bool:
        """Remove the collection and its data; False when it did not exist."""

    async def stats(self, collection: str) -> CollectionStats:
        """Existence, point count and dimension; a missing collection is not an error here."""
