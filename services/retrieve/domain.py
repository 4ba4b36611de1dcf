"""Domain records of the retrieve service and their conversion from/to protobuf messages.

Validation happens here, once, when a message becomes a record, so backends receive only
well-formed data: canonical UUID ids, finite non-zero vectors, sane search parameters.
Dimension checks need the collection and live in the backends (:func:`check_dimension`).
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.sparse import SparseEncoder, SparseVector
from services.retrieve.metrics import SPARSE_ENCODED_HERE
from zhiku.v1 import common_pb2, retrieve_pb2

log = logging.getLogger("zhiku.retrieve")

# Payload keys as stored in both backends; file_name carries a keyword index.
TEXT, FILE_NAME, CHUNK_INDEX, METADATA = "text", "file_name", "chunk_index", "metadata"
# Parent-child chunks only: the parent section a child belongs to (absent for plain chunks).
PARENT_ID, PARENT_TEXT = "parent_id", "parent_text"
# Document access: keyword list of reader tokens, indexed like file_name (see check_acl).
ACL = "acl"
OPEN_ACL = "*"
ACL_PREFIXES = ("user:", "group:")
MAX_ACL_TOKENS = 1000
# Name of the dense vector in every collection; the sparse (BM25) vector is sparse.SPARSE.
DENSE = "dense"

# Effective search modes (after resolving UNSPECIFIED and missing inputs).
MODE_DENSE, MODE_SPARSE, MODE_HYBRID = "dense", "sparse", "hybrid"
_REQUESTED_MODES = {
    retrieve_pb2.SEARCH_MODE_UNSPECIFIED: MODE_HYBRID,
    retrieve_pb2.SEARCH_MODE_HYBRID: MODE_HYBRID,
    retrieve_pb2.SEARCH_MODE_DENSE: MODE_DENSE,
    retrieve_pb2.SEARCH_MODE_SPARSE: MODE_SPARSE,
}
# How hybrid merges its candidate lists (UNSPECIFIED: the service's configured default).
FUSION_DBSF, FUSION_RRF = "dbsf", "rrf"
_REQUESTED_FUSIONS = {
    retrieve_pb2.HYBRID_FUSION_DBSF: FUSION_DBSF,
    retrieve_pb2.HYBRID_FUSION_RRF: FUSION_RRF,
}


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


def check_acl(tokens: Sequence[str], what: str) -> tuple[str, ...]:
    """Access tokens as stored and matched: ``*``, ``user:<id>`` or ``group:<name>``, each
    non-empty after its prefix; duplicates dropped, order kept."""
    if len(tokens) > MAX_ACL_TOKENS:
        raise InvalidArgument(f"{what}: {len(tokens)} access tokens; the limit is {MAX_ACL_TOKENS}")
    for token in tokens:
        if token != OPEN_ACL and not any(
            token.startswith(prefix) and len(token) > len(prefix) for prefix in ACL_PREFIXES
        ):
            raise InvalidArgument(f"{what}: access token {token!r} is not '*', 'user:<id>' or 'group:<name>'")
    return tuple(dict.fromkeys(tokens))


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
    parent_id: str = ""
    parent_text: str = ""
    # BM25 term weights of ``text``; empty when the text has no words.
    sparse: SparseVector = field(default_factory=lambda: SparseVector([], []))
    # Who may read the chunk (check_acl); empty: no ``acl`` field, open to every reader.
    acl: tuple[str, ...] = ()

    @classmethod
    def from_pb(
        cls,
        point: retrieve_pb2.Point,
        encoder: SparseEncoder | None = None,
        vector: list[float] | None = None,
    ) -> PointRecord:
        """``vector``: the point's vector, already checked (points_from_pb checks a batch)."""
        point_id = canonical_id(point.id)
        what = f"point {point_id}"
        if not point.file_name:
            raise InvalidArgument(f"{what}: file_name is empty")
        if point.chunk_index < 0:
            raise InvalidArgument(f"{what}: chunk_index is negative ({point.chunk_index})")
        return cls(
            id=point_id,
            vector=check_vector(point.vector, what) if vector is None else vector,
            file_name=point.file_name,
            chunk_index=point.chunk_index,
            text=point.text,
            metadata=dict(point.metadata),
            parent_id=point.parent_id,
            parent_text=point.parent_text,
            sparse=sparse_of(point, encoder, what),
            acl=check_acl(point.acl, what),
        )

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            TEXT: self.text,
            FILE_NAME: self.file_name,
            CHUNK_INDEX: self.chunk_index,
            METADATA: dict(self.metadata),
        }
        if self.parent_id:
            payload[PARENT_ID], payload[PARENT_TEXT] = self.parent_id, self.parent_text
        if self.acl:
            payload[ACL] = list(self.acl)
        return payload


_foreign_specs_logged: set[str] = set()


def sparse_of(point: retrieve_pb2.Point, encoder: SparseEncoder | None, what: str) -> SparseVector:
    """The point's sparse vector: the writer's when it was computed with ``encoder``'s spec
    (checked: a malformed one is refused, never stored), else ``encoder``'s of the text.
    None: the service keeps no sparse vectors (nothing to compute)."""
    indices, values, spec = point.sparse_indices, point.sparse_values, point.sparse_encoder
    if not spec and (indices or values):
        raise InvalidArgument(f"{what}: sparse_indices/sparse_values without sparse_encoder")
    if encoder is None:
        return SparseVector([], [])
    if spec == encoder.spec:
        return check_sparse(indices, values, what)
    if spec:
        SPARSE_ENCODED_HERE.labels("mismatch").inc()
        if spec not in _foreign_specs_logged:
            _foreign_specs_logged.add(spec)
            log.warning(
                "points arrive with sparse vectors of encoder %r, this service encodes with %r: "
                "encoding their text here instead (writers follow EnsureCollection's spec)",
                spec,
                encoder.spec,
            )
    else:
        SPARSE_ENCODED_HERE.labels("absent").inc()
    return encoder.document(point.text)


def check_sparse(indices: Sequence[int], values: Sequence[float], what: str) -> SparseVector:
    """A writer's sparse vector as the engines need it: as many values as indices, indices
    strictly increasing (unique, as the encoder sorts them), weights finite and >= 0."""
    if len(indices) != len(values):
        raise InvalidArgument(
            f"{what}: {len(indices)} sparse_indices but {len(values)} sparse_values (must be equal)"
        )
    kept = list(indices)
    if any(a >= b for a, b in itertools.pairwise(kept)):
        raise InvalidArgument(f"{what}: sparse_indices are not strictly increasing")
    weights = list(values)
    if not all(0.0 <= v < math.inf for v in weights):  # NaN fails too
        raise InvalidArgument(f"{what}: sparse_values must be finite and >= 0")
    return SparseVector(kept, weights)


def points_from_pb(
    points: Sequence[retrieve_pb2.Point], encoder: SparseEncoder | None = None
) -> list[PointRecord]:
    """Validate every point (and encode its sparse vector); a repeated id keeps its last
    occurrence, as Qdrant would."""
    by_id: dict[str, PointRecord] = {}
    for point, vector in zip(points, checked_vectors(points), strict=True):
        record = PointRecord.from_pb(point, encoder, vector)
        by_id.pop(record.id, None)
        by_id[record.id] = record
    return list(by_id.values())


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated search. ``mode`` is what was asked for, resolved against the inputs:
    hybrid without text is dense, hybrid without a vector is sparse."""

    vector: list[float]
    top_k: int
    score_threshold: float
    file_names: tuple[str, ...] = ()
    mode: str = MODE_DENSE
    sparse: SparseVector = field(default_factory=lambda: SparseVector([], []))
    metadata_filter: tuple[tuple[str, str], ...] = ()
    fusion: str = FUSION_DBSF
    # Document access: None searches every chunk; else only chunks whose acl holds one of
    # these tokens (always with "*") or that have no acl. Applied inside the vector query.
    reader_acl: tuple[str, ...] | None = None

    @classmethod
    def from_pb(
        cls,
        request: retrieve_pb2.SearchRequest,
        default_top_k: int,
        max_top_k: int,
        encoder: SparseEncoder | None = None,
        default_fusion: str = FUSION_DBSF,
    ) -> SearchQuery:
        if request.top_k < 0 or request.top_k > max_top_k:
            raise InvalidArgument(f"top_k must be in 0..{max_top_k} (0: default {default_top_k})")
        threshold = request.score_threshold
        if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
            raise InvalidArgument(f"score_threshold must be in [0, 1], got {threshold}")
        if any(not name for name in request.file_names):
            raise InvalidArgument("file_names contains an empty name")
        if any(not key for key in request.metadata_filter):
            raise InvalidArgument("metadata_filter contains an empty key")
        requested = _REQUESTED_MODES.get(request.mode)
        if requested is None:
            raise InvalidArgument(f"unknown search mode {request.mode}")
        fusion: str | None
        if request.fusion == retrieve_pb2.HYBRID_FUSION_UNSPECIFIED:
            fusion = default_fusion
        elif (fusion := _REQUESTED_FUSIONS.get(request.fusion)) is None:
            raise InvalidArgument(f"unknown hybrid fusion {request.fusion}")
        has_vector, has_text = bool(request.vector), bool(request.query_text.strip())
        if requested == MODE_DENSE and not has_vector:
            raise InvalidArgument("dense search needs a query vector")
        if requested == MODE_SPARSE and not has_text:
            raise InvalidArgument("sparse search needs query_text")
        if not (has_vector or has_text):
            raise InvalidArgument("query is empty: search needs a query vector, query_text or both")
        mode = requested
        if requested == MODE_HYBRID and not has_text:
            mode = MODE_DENSE
        elif requested == MODE_HYBRID and not has_vector:
            mode = MODE_SPARSE
        sparse = SparseVector([], [])
        if mode != MODE_DENSE and encoder is not None:
            sparse = encoder.query(request.query_text)
        return cls(
            vector=check_vector(request.vector, "query") if mode != MODE_SPARSE else [],
            top_k=request.top_k or default_top_k,
            score_threshold=threshold,
            file_names=tuple(dict.fromkeys(request.file_names)),
            mode=mode,
            sparse=sparse,
            metadata_filter=tuple(sorted(request.metadata_filter.items())),
            fusion=fusion,
            reader_acl=(
                (OPEN_ACL, *(t for t in check_acl(request.reader_acl, "reader_acl") if t != OPEN_ACL))
                if request.enforce_acl
                else None
            ),
        )

    def without_sparse(self) -> SearchQuery:
        """The dense-only fallback for collections made before sparse vectors existed."""
        return SearchQuery(
            vector=self.vector,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            file_names=self.file_names,
            mode=MODE_DENSE,
            metadata_filter=self.metadata_filter,
            reader_acl=self.reader_acl,
        )


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: str
    file_name: str
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, str]
    dense_score: float = 0.0  # (1 + cos) / 2 to the query vector; 0 without one (scores.py)
    parent_id: str = ""
    parent_text: str = ""

    @classmethod
    def from_payload(
        cls, point_id: object, score: float, payload: Mapping[str, Any] | None, dense_score: float = 0.0
    ) -> Hit:
        payload = payload or {}
        metadata = payload.get(METADATA) or {}
        return cls(
            chunk_id=str(point_id),
            file_name=str(payload.get(FILE_NAME, "")),
            chunk_index=int(payload.get(CHUNK_INDEX, 0)),
            text=str(payload.get(TEXT, "")),
            score=score,
            metadata={str(k): str(v) for k, v in metadata.items()},
            dense_score=dense_score,
            parent_id=str(payload.get(PARENT_ID) or ""),
            parent_text=str(payload.get(PARENT_TEXT) or ""),
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
            dense_score=self.dense_score,
            parent_id=self.parent_id,
            parent_text=self.parent_text,
        )


@dataclass(frozen=True, slots=True)
class CollectionStats:
    exists: bool
    points: int = 0
    dimension: int = 0
    sparse: bool = False

    def to_pb(self) -> retrieve_pb2.StatsResponse:
        return retrieve_pb2.StatsResponse(
            exists=self.exists, points=self.points, dimension=self.dimension, sparse=self.sparse
        )


_fallback_logged: set[str] = set()


def dense_fallback(collection: str, query: SearchQuery) -> SearchQuery:
    """Dense-only search on a collection made before sparse vectors existed (logged once per
    collection); a sparse-only search cannot be served there."""
    if query.mode == MODE_SPARSE:
        raise FailedPrecondition(
            f"collection {collection!r} has no sparse vector (created before hybrid search): re-create it"
        )
    if collection not in _fallback_logged:
        _fallback_logged.add(collection)
        log.warning(
            "collection %s has no sparse vector: %s search falls back to dense", collection, query.mode
        )
    return query.without_sparse()


def checked_vectors(points: Sequence[retrieve_pb2.Point]) -> list[list[float]]:
    """Each point's vector as a list, checked as check_vector does, in one numpy pass.

    Checking point by point had numpy convert each protobuf field on its own: 16 ms of GIL
    per 512 points of 384-d, against 8 for the lists plus one array (bench-scale's GIL
    profile of a writer flat out had it at 8% of the retrieve process)."""
    rows = [list(point.vector) for point in points]
    try:
        array: np.ndarray | None = np.array(rows, dtype=np.float32)
    except ValueError:  # dimensions differ: the collection's check refuses them later
        array = None
    if array is None or array.ndim != 2:
        suspects: Iterable[int] = range(len(rows))
    else:
        suspects = np.flatnonzero(~(np.isfinite(array).all(axis=1) & array.any(axis=1))).tolist()
    for index in suspects:
        check_vector(rows[index], f"point {canonical_id(points[index].id)}")
    return rows
