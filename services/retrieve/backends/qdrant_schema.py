"""What a Zhiku collection looks like on a Qdrant server, from the settings.

Every collection, a knowledge base's own or a shared one, has the named dense vector ``dense``
(Cosine) and the sparse BM25 vector with the server-side IDF modifier, and is laid out for the
cluster as configured: shards, replicas, write consistency, on-disk storage and optional int8
scalar quantization. Shared collections also get per-tenant HNSW graphs (``m`` 0 and a
positive ``payload_m``), which is what Qdrant advises when every query filters by tenant.
"""

from __future__ import annotations

from typing import Any

from qdrant_client import models

from services.common.sparse import SPARSE
from services.retrieve.config import RetrieveSettings
from services.retrieve.domain import ACL, DENSE, FILE_NAME

# Payload field naming a point's knowledge base in a shared collection (keyword, is_tenant).
KB = "kb"
_ORDERINGS = {
    "weak": models.WriteOrdering.WEAK,
    "medium": models.WriteOrdering.MEDIUM,
    "strong": models.WriteOrdering.STRONG,
}
_READ_CONSISTENCY = {
    "all": models.ReadConsistencyType.ALL,
    "majority": models.ReadConsistencyType.MAJORITY,
    "quorum": models.ReadConsistencyType.QUORUM,
}


def collection_params(settings: RetrieveSettings, dimension: int, shared: bool) -> dict[str, Any]:
    """Keyword arguments of ``create_collection`` (after the name) for a new collection."""
    on_disk = settings.qdrant_on_disk_vectors or None  # None: the server's default (RAM)
    params: dict[str, Any] = {
        "vectors_config": {
            DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE, on_disk=on_disk)
        },
        # The server weights terms by IDF over the collection (BM25, sparse.py).
        "sparse_vectors_config": {
            SPARSE: models.SparseVectorParams(
                modifier=models.Modifier.IDF,
                index=models.SparseIndexParams(on_disk=True) if on_disk else None,
            )
        },
        "shard_number": settings.qdrant_shard_number,
        "replication_factor": settings.qdrant_replication_factor,
        "write_consistency_factor": settings.qdrant_write_consistency_factor,
        "on_disk_payload": settings.qdrant_on_disk_payload,
        "quantization_config": quantization_config(settings),
    }
    if shared:
        params["hnsw_config"] = models.HnswConfigDiff(
            m=settings.qdrant_shared_hnsw_m, payload_m=settings.qdrant_shared_payload_m
        )
    return params


def payload_indexes(shared: bool) -> list[tuple[str, models.PayloadSchemaType | models.KeywordIndexParams]]:
    """Payload indexes every collection gets (server only: local mode has none): keywords on
    ``file_name`` and on the ``acl`` reader tokens every restricted search filters by. In a
    shared collection the ``kb`` index is the tenant index: Qdrant keeps each tenant's points
    together on disk and builds its graph per tenant."""
    indexes: list[tuple[str, models.PayloadSchemaType | models.KeywordIndexParams]] = []
    if shared:
        indexes.append((KB, models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)))
    indexes.append((FILE_NAME, models.PayloadSchemaType.KEYWORD))
    indexes.append((ACL, models.PayloadSchemaType.KEYWORD))
    return indexes


def quantization_config(settings: RetrieveSettings) -> models.ScalarQuantization | None:
    if settings.qdrant_quantization == "none":
        return None
    return models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8,
            quantile=settings.qdrant_quantization_quantile,
            always_ram=settings.qdrant_quantization_always_ram,
        )
    )


def dense_search_params(settings: RetrieveSettings) -> models.SearchParams | None:
    """Rescoring and oversampling of a quantized dense search; None without quantization."""
    if settings.qdrant_quantization == "none":
        return None
    return models.SearchParams(
        quantization=models.QuantizationSearchParams(
            rescore=settings.qdrant_quantization_rescore,
            oversampling=settings.qdrant_quantization_oversampling,
        )
    )


def sparse_search_params(corpus: models.Filter | None) -> models.SearchParams | None:
    """IDF statistics over ``corpus`` (one tenant's points) instead of the whole collection."""
    return None if corpus is None else models.SearchParams(idf=models.IdfCorpusParams(corpus=corpus))


def write_ordering(settings: RetrieveSettings) -> models.WriteOrdering:
    return _ORDERINGS[settings.qdrant_write_ordering]


def read_consistency(settings: RetrieveSettings) -> models.ReadConsistencyType | None:
    level = settings.qdrant_read_consistency
    return None if level is None else _READ_CONSISTENCY[level]
