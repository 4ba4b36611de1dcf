"""Where a knowledge base's points live on a Qdrant server: its own collection, or its share of
a collection many knowledge bases use.

Qdrant advises one collection for many tenants, partitioned by a payload field: each
collection costs the server memory, file handles and a WAL of its own. In the shared layout a
knowledge base is the set of points whose ``kb`` payload is its name, in the shared collection
of its vector dimension (``<prefix>_<dimension>``), plus one marker point without vectors that
says the knowledge base exists (so an empty one has a dimension and ``Stats`` tells it apart
from a missing one). Creating a knowledge base writes its marker; dropping it deletes its points.

Two knowledge bases may hold the same chunk id (ids are made per knowledge base), so a shared
point's id is derived from the knowledge base and the chunk id, and the chunk id travels in
the payload. Every filter a call sends goes through :meth:`Place.scope`, which adds the tenant
condition: no query, count or delete can reach another knowledge base's points.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models

from services.common.names import is_temporary_kb
from services.retrieve.backends.qdrant_schema import KB
from services.retrieve.config import RetrieveSettings
from services.retrieve.domain import PointRecord

# Payload of a shared point: the chunk id the caller gave (the point id is derived from it).
CHUNK_ID = "chunk_id"
# Payload flag of the marker point that makes a knowledge base exist in a shared collection.
MARKER = "kb_marker"
_POINTS = uuid.UUID("6f1d8a52-3c1e-4f0a-9d55-2b7f5a0c9e11")
_MARKERS = uuid.UUID("b8e0c3d4-71a2-4e5b-8f36-0d9c4a1e7b22")


def uses_shared(settings: RetrieveSettings, kb: str) -> bool:
    """The layout choice for one knowledge base: file chats always share."""
    return settings.qdrant_layout == "shared" or is_temporary_kb(kb)


def shared_collection(settings: RetrieveSettings, dimension: int) -> str:
    return f"{settings.qdrant_shared_collection}_{dimension}"


def is_shared_collection(settings: RetrieveSettings, name: str) -> bool:
    prefix = re.escape(settings.qdrant_shared_collection)
    return re.fullmatch(rf"{prefix}_[1-9][0-9]*", name) is not None


def marker_id(kb: str) -> str:
    return str(uuid.uuid5(_MARKERS, kb))


@dataclass(frozen=True, slots=True)
class Place:
    """One knowledge base's home: ``collection`` is the Qdrant collection; ``shared`` says
    whether other knowledge bases live there too."""

    kb: str
    collection: str
    shared: bool

    @property
    def tenant(self) -> models.FieldCondition:
        return models.FieldCondition(key=KB, match=models.MatchValue(value=self.kb))

    def scope(
        self, must: Sequence[models.Condition] = (), must_not: Sequence[models.Condition] = ()
    ) -> models.Filter | None:
        """The filter of ``must`` and ``must_not``, limited to this knowledge base's points;
        None when nothing is left to filter (an own collection, no conditions)."""
        conditions = [self.tenant, *must] if self.shared else list(must)
        if not conditions and not must_not:
            return None
        return models.Filter(must=conditions, must_not=list(must_not) or None)

    def chunks(self) -> models.Filter | None:
        """Every chunk of this knowledge base (its marker point excluded): what Stats counts."""
        if not self.shared:
            return None
        return self.scope(must_not=[models.HasIdCondition(has_id=[marker_id(self.kb)])])

    def point_id(self, chunk_id: str) -> str:
        return str(uuid.uuid5(_POINTS, f"{self.kb}/{chunk_id}")) if self.shared else chunk_id

    def payload(self, point: PointRecord) -> dict[str, Any]:
        payload = point.payload()
        if self.shared:
            payload[KB], payload[CHUNK_ID] = self.kb, point.id
        return payload

    def chunk_id(self, point_id: object, payload: dict[str, Any] | None) -> str:
        """The caller's chunk id of a stored point."""
        if self.shared and payload and CHUNK_ID in payload:
            return str(payload[CHUNK_ID])
        return str(point_id)

    def marker(self) -> models.PointStruct:
        return models.PointStruct(id=marker_id(self.kb), vector={}, payload={KB: self.kb, MARKER: True})
