"""Sparse vectors computed by the writer (issue 20), through the real gRPC server.

EnsureCollection names the service's encoder spec; a point sent with that spec is stored
with exactly the vector it carries (the service does not cut its text), a point with another
spec or none is encoded from its text as before, and a malformed vector is refused whole.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from qdrant_client import models

from services.common.sparse import SPARSE, SparseEncoder, token_id
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_collection import create_on_disk
from services.retrieve.backends.qdrant import QdrantBackend
from services.retrieve.domain import DENSE
from services.retrieve.tests.conftest import (
    Running,
    expect_error,
    make_point,
    make_settings,
    point_id,
    running,
)
from zhiku.v1 import retrieve_pb2 as pb

KB = "writer_sparse"
DIM = 4
E0 = [1.0, 0.0, 0.0, 0.0]
# A word in no text below: found only through a vector the writer sent.
ONLY_SENT = "zebra"


def _encoded_here(reason: str) -> float:
    return REGISTRY.get_sample_value("zhiku_retrieve_sparse_encoded_points_total", {"reason": reason}) or 0.0


async def _ensure(retrieve: Running, collection: str = KB) -> str:
    reply = await retrieve.stub.EnsureCollection(
        pb.EnsureCollectionRequest(collection=collection, dimension=DIM)
    )
    return reply.sparse_encoder


async def _sparse_hits(retrieve: Running, text: str) -> list[str]:
    request = pb.SearchRequest(collection=KB, query_text=text, mode=pb.SEARCH_MODE_SPARSE, top_k=10)
    return [hit.chunk_id for hit in (await retrieve.stub.Search(request)).hits]


def _with_sparse(point: pb.Point, indices: list[int], values: list[float], spec: str) -> pb.Point:
    point.sparse_indices.extend(indices)
    point.sparse_values.extend(values)
    point.sparse_encoder = spec
    return point


async def test_ensure_collection_names_the_services_encoder(retrieve: Running) -> None:
    settings = retrieve.settings
    expected = SparseEncoder(
        settings.sparse_k1, settings.sparse_b, settings.sparse_avg_len, settings.sparse_tokenizer
    ).spec
    assert await _ensure(retrieve) == expected  # created
    assert await _ensure(retrieve) == expected  # existing
    assert SparseEncoder.from_spec(expected).spec == expected


async def test_a_reconfigured_service_names_its_new_encoder(tmp_path: Path) -> None:
    async with running(make_settings("edge", tmp_path, sparse_k1=2.0, sparse_tokenizer="jieba")) as served:
        spec = await _ensure(served)
    assert spec == SparseEncoder(2.0, 0.75, 120.0, "jieba").spec
    assert spec != SparseEncoder().spec
    assert " k1=2.0 " in spec and "tokenizer=jieba-" in spec


@pytest.mark.parametrize("layout", ["edge", "qdrant"])  # shared collections came with sparse vectors
async def test_a_collection_without_sparse_vectors_names_no_encoder(layout: str, tmp_path: Path) -> None:
    async with running(make_settings(layout, tmp_path)) as served:
        if isinstance(served.backend, QdrantBackend):
            dense = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
            await served.backend.client.create_collection(KB, vectors_config={DENSE: dense})
        else:
            assert isinstance(served.backend, EdgeBackend)
            create_on_disk(served.backend.root / KB, DIM, served.backend._options, sparse=False)
        assert await _ensure(served) == ""


async def test_a_point_with_the_services_spec_keeps_the_sent_vector(retrieve: Running) -> None:
    spec = await _ensure(retrieve)
    absent_before = _encoded_here("absent")
    sent = _with_sparse(make_point(0, E0, text="苹果很好吃。"), [7, token_id(ONLY_SENT)], [0.5, 1.25], spec)
    plain = make_point(1, E0, text="苹果很好吃。")  # an older writer: no vector, encoded by the service
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[sent, plain]))
    # The sent vector's word finds the point although its text lacks it; its text's word
    # finds only the point the service encoded: the sent point's text was never cut.
    assert await _sparse_hits(retrieve, ONLY_SENT) == [point_id(0)]
    assert await _sparse_hits(retrieve, "苹果") == [point_id(1)]
    assert _encoded_here("absent") == absent_before + 1
    if isinstance(retrieve.backend, QdrantBackend) and retrieve.settings.qdrant_layout == "per_collection":
        stored = await retrieve.backend.client.retrieve(KB, [point_id(0)], with_vectors=[SPARSE])
        vector = stored[0].vector
        assert isinstance(vector, dict)
        kept = vector[SPARSE]
        assert isinstance(kept, models.SparseVector)
        assert (kept.indices, kept.values) == ([7, token_id(ONLY_SENT)], [0.5, 1.25])


async def test_a_point_with_another_spec_is_encoded_from_its_text(retrieve: Running) -> None:
    spec = await _ensure(retrieve)
    other = spec.replace(" k1=", " k1=9")  # e.g. written before the service was reconfigured
    assert other != spec
    mismatched_before = _encoded_here("mismatch")
    stale = _with_sparse(make_point(0, E0, text="香蕉牛奶很好喝。"), [token_id(ONLY_SENT)], [1.0], other)
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[stale]))
    assert await _sparse_hits(retrieve, ONLY_SENT) == []
    assert await _sparse_hits(retrieve, "牛奶") == [point_id(0)]
    assert _encoded_here("mismatch") == mismatched_before + 1


# (indices, values, message fragment, sent with the service's spec)
MALFORMED: list[tuple[list[int], list[float], str, bool]] = [
    ([1, 2], [0.5], "2 sparse_indices but 1 sparse_values", True),
    ([1], [0.5, 0.5], "1 sparse_indices but 2 sparse_values", True),
    ([2, 1], [0.5, 0.5], "not strictly increasing", True),
    ([3, 3], [0.5, 0.5], "not strictly increasing", True),
    ([1, 2], [0.5, -0.1], "finite and >= 0", True),
    ([1, 2], [float("nan"), 0.5], "finite and >= 0", True),
    ([1, 2], [0.5, float("inf")], "finite and >= 0", True),
    ([1, 2], [0.5, 0.5], "without sparse_encoder", False),
]


async def test_malformed_sparse_fields_are_invalid_and_nothing_is_written(tmp_path: Path) -> None:
    async with running(make_settings("edge", tmp_path)) as served:
        spec = await _ensure(served)
        for indices, values, fragment, with_spec in MALFORMED:
            bad = _with_sparse(make_point(9, E0, text="坏的"), indices, values, spec if with_spec else "")
            await expect_error(
                served.stub.Upsert(pb.UpsertRequest(collection=KB, points=[make_point(1, E0), bad])),
                grpc.StatusCode.INVALID_ARGUMENT,
                point_id(9),
                fragment,
            )
        assert (await served.stub.Stats(pb.StatsRequest(collection=KB))).points == 0
        # An empty pair with the spec is a text without words: accepted.
        empty = _with_sparse(make_point(2, E0, text="。"), [], [], spec)
        assert (await served.stub.Upsert(pb.UpsertRequest(collection=KB, points=[empty]))).upserted == 1
