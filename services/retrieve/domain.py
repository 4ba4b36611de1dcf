"""Domain records of the retrieve service and their conversion from/to protobuf messages.

Validation happens here, once, when a message becomes a record, so backends receive only
well-formed data: canonical UUID ids, finite non-zero vectors, sane search parameters.
Dimension checks need the collection and live in the backends (:func:`check_dimension`).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.errors import InvalidArgument
from zhiku.v1 import common_pb2, retrieve_pb2

# Payload keys as stored in both backends; file_name carries a keyword index.
TEXT, FILE_NAME, CHUNK_INDEX, METADATA = "text", "file_name", "chunk_index", "metadata"
# Name of the dense vector in every collection; a sparse (BM25) vector can be added beside it.
DENSE = "dense"


def check_vector(values: Sequence[float], what: str) -> list[float]:
    """Reject empty, non-finite and zero vectors (cosine is undefined for the last)."""
    if not values:
        raise InvalidArgument(f"{what}: vector is empty")
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidArgument(f"{what}: vector contains NaN or infinity")
    if not np.any(array):
        raise InvalidArgument(f"{what}: vector is all zeros")
    return list(values)


def check_dimension(collection: str, expected: int, got: int, what: str) -> None:
    if expected != got:
        raise InvalidArgument(
            f"{what}: vector has dimension {got}, collection {collection!r} has dimension {expected}"
        )


def canonical_id(raw: str) -> str:
    """Point ids are UUID strings; store and return them in canonical lowercase form."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidArgument(f"point id {raw!r} is not a UUID") from None


@dataclass(frozen=True, slots=True)
class PointRecord:
    id: str
    vector: list[float]
    file_name: str
    chunk_index: int
    text: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, point: retrieve_pb2.Point) -> PointRecord:
        point_id = canonical_id(point.id)
        what = f"point {point_id}"
        if not point.file_name:
            raise InvalidArgument(f"{what}: file_name is empty")
        if point.chunk_index < 0:
            raise InvalidArgument(f"{what}: chunk_index is negative ({point.chunk_index})")
        return cls(
            id=point_id,
            vector=check_vector(point.vector, what),
            file_name=point.file_name,
            chunk_index=point.chunk_index,
            text=point.text,
            metadata=dict(point.metadata),
        )

    def payload(self) -> dict[str, Any]:
        return {
            TEXT: self.text,
            FILE_NAME: self.file_name,
            CHUNK_INDEX: self.chunk_index,
            METADATA: dict(self.metadata),
        }


def points_from_pb(points: Sequence[retrieve_pb2.Point]) -> list[PointRecord]:
    """Validate every point; a repeated id keeps its last occurrence, as Qdrant would."""
    by_id: dict[str, PointRecord] = {}
    for point in points:
        record = PointRecord.from_pb(point)
        by_id.pop(record.id, None)
        by_id[record.id] = record
    return list(by_id.values())


@dataclass(frozen=True, slots=True)
class SearchQuery:
    vector: list[float]
    top_k: int
    score_threshold: float
    file_names: tuple[str, ...] = ()

    @classmethod
    def from_pb(cls, request: retrieve_pb2.SearchRequest, default_top_k: int, max_top_k: int) -> SearchQuery:
        if request.top_k < 0 or request.top_k > max_top_k:
            raise InvalidArgument(f"top_k must be in 0..{max_top_k} (0: default {default_top_k})")
        threshold = request.score_threshold
        if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
            raise InvalidArgument(f"score_threshold must be in [0, 1], got {threshold}")
        if any(not name for name in request.file_names):
            raise InvalidArgument("file_names contains an empty name")
        return cls(
            vector=check_vector(request.vector, "query"),
            top_k=request.top_k or default_top_k,
            score_threshold=threshold,
            file_names=tuple(dict.fromkeys(request.file_names)),
        )


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: str
    file_name: str
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, str]

    @classmethod
    def from_payload(cls, point_id: object, score: float, payload: Mapping[str, Any] | None) -> Hit:
        payload = payload or {}
        metadata = payload.get(METADATA) or {}
        return cls(
            chunk_id=str(point_id),
            file_name=str(payload.get(FILE_NAME, "")),
            chunk_index=int(payload.get(CHUNK_INDEX, 0)),
            text=str(payload.get(TEXT, "")),
            score=score,
            metadata={str(k): str(v) for k, v in metadata.items()},
        )

    def to_pb(self, knowledge_base: str) -> common_pb2.Passage:
        return common_pb2.Passage(
            chunk_id=self.chunk_id,
            knowledge_base=knowledge_base,
            file_name=self.file_name,
            chunk_index=self.chunk_index,
            text=self.text,
            score=self.score,
            metadata=self.metadata,
        )


@dataclass(frozen=True, slots=True)
class CollectionStats:
    exists: bool
    points: int = 0
    dimension: int = 0

    def to_pb(self) -> retrieve_pb2.StatsResponse:
        return retrieve_pb2.StatsResponse(exists=self.exists, points=self.points, dimension=self.dimension)
