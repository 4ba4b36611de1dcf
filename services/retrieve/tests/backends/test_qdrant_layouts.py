"""The Qdrant backend's two layouts in qdrant-client's local mode: what lands where, tenant
isolation in the shared collection, file chats always sharing, and the cluster settings."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from qdrant_client import models

from services.common.sparse import SPARSE
from services.retrieve.backends import qdrant_schema as schema
from services.retrieve.backends.qdrant import QdrantBackend
from services.retrieve.backends.qdrant_tenancy import CHUNK_ID, MARKER, marker_id
from services.retrieve.domain import ACL, DENSE, FILE_NAME
from services.retrieve.tests.conftest import (
    Running,
    expect_error,
    make_point,
    make_settings,
    point_id,
    running,
)
from zhiku.v1 import retrieve_pb2 as pb

DIM = 4
E0 = [1.0, 0.0, 0.0, 0.0]
SHARED_4 = "zhiku~shared_4"


def backend_of(served: Running) -> QdrantBackend:
    assert isinstance(served.backend, QdrantBackend)
    return served.backend


async def ensure(served: Running, kb: str, dimension: int = DIM) -> bool:
    reply = await served.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=kb, dimension=dimension))
    return reply.created


async def upsert(served: Running, kb: str, points: list[pb.Point]) -> None:
    await served.stub.Upsert(pb.UpsertRequest(collection=kb, points=points))


async def hits(served: Running, kb: str, text: str = "", **fields: object) -> list[tuple[str, str, str]]:
    request = pb.SearchRequest(collection=kb, vector=E0, query_text=text, top_k=50, **fields)  # type: ignore[arg-type]
    reply = await served.stub.Search(request)
    return [(h.chunk_id, h.file_name, h.text) for h in reply.hits]


async def count(served: Running, kb: str) -> int:
    return (await served.stub.Stats(pb.StatsRequest(collection=kb))).points


def twin_points(kb: str) -> list[pb.Point]:
    """The same chunk ids and file names in every knowledge base; only the text differs."""
    return [
        make_point(n, [1.0, float(n), 0.0, 0.0], file_name, text=f"{kb} 香蕉 chunk {n}")
        for n, file_name in enumerate(["a.txt", "a.txt", "b.txt"])
    ]


async def test_shared_layout_never_returns_another_knowledge_bases_points(tmp_path: Path) -> None:
    async with running(make_settings("qdrant-shared", tmp_path)) as served:
        for kb in ("alpha", "beta"):
            assert await ensure(served, kb)
            await upsert(served, kb, twin_points(kb))
        client = backend_of(served).client
        # One collection holds both, each point under an id of its own.
        assert [c.name for c in (await client.get_collections()).collections] == [SHARED_4]
        assert (await client.count(SHARED_4, exact=True)).count == 2 * (3 + 1)  # chunks + markers
        for kb in ("alpha", "beta"):
            for mode in (pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_SPARSE, pb.SEARCH_MODE_HYBRID):
                found = await hits(served, kb, "香蕉", mode=mode)
                assert sorted(found) == sorted(
                    (point_id(n), f, f"{kb} 香蕉 chunk {n}")
                    for n, f in enumerate(["a.txt", "a.txt", "b.txt"])
                ), (kb, mode)
            assert await hits(served, kb, file_names=["a.txt"]) != []
            assert await count(served, kb) == 3
        # Deleting a file in one leaves the other's file of the same name.
        deleted = await served.stub.DeleteByFile(
            pb.DeleteByFileRequest(collection="alpha", file_name="a.txt")
        )
        assert deleted.deleted == 2
        assert (await count(served, "alpha"), await count(served, "beta")) == (1, 3)
        assert {f for _, f, _ in await hits(served, "beta")} == {"a.txt", "b.txt"}
        # Dropping one removes its points and marker only; the name is free again.
        assert (await served.stub.DropCollection(pb.DropCollectionRequest(collection="alpha"))).dropped
        assert not (await served.stub.Stats(pb.StatsRequest(collection="alpha"))).exists
        assert (await client.count(SHARED_4, exact=True)).count == 3 + 1
        assert await count(served, "beta") == 3
        assert not (await served.stub.DropCollection(pb.DropCollectionRequest(collection="alpha"))).dropped
        assert await ensure(served, "alpha")
        assert (await count(served, "alpha"), await hits(served, "alpha")) == (0, [])


async def test_shared_points_carry_tenant_and_chunk_id_and_a_marker_makes_the_kb(tmp_path: Path) -> None:
    async with running(make_settings("qdrant-shared", tmp_path)) as served:
        await ensure(served, "kb1")
        await upsert(served, "kb1", [make_point(7, E0, "x.md")])
        client = backend_of(served).client
        records, _ = await client.scroll(SHARED_4, limit=10, with_vectors=True)
        by_id = {str(r.id): r for r in records}
        marker = by_id.pop(marker_id("kb1"))
        assert marker.payload == {schema.KB: "kb1", MARKER: True}
        assert not marker.vector  # never a search hit
        (chunk,) = by_id.values()
        assert str(chunk.id) != point_id(7)
        assert chunk.payload is not None
        assert (chunk.payload[schema.KB], chunk.payload[CHUNK_ID], chunk.payload[FILE_NAME]) == (
            "kb1",
            point_id(7),
            "x.md",
        )
        # An empty knowledge base exists (with its dimension); an unknown one does not.
        await ensure(served, "empty")
        assert await served.stub.Stats(pb.StatsRequest(collection="empty")) == pb.StatsResponse(
            exists=True, points=0, dimension=DIM, sparse=True
        )


async def test_shared_layout_keeps_one_collection_per_dimension(tmp_path: Path) -> None:
    async with running(make_settings("qdrant-shared", tmp_path)) as served:
        assert await ensure(served, "small", 4)
        assert await ensure(served, "large", 8)
        assert not await ensure(served, "small", 4)
        names = {c.name for c in (await backend_of(served).client.get_collections()).collections}
        assert names == {SHARED_4, "zhiku~shared_8"}
        stats = await served.stub.Stats(pb.StatsRequest(collection="large"))
        assert (stats.exists, stats.dimension) == (True, 8)
        await expect_error(
            served.stub.EnsureCollection(pb.EnsureCollectionRequest(collection="large", dimension=4)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dimension 8, not 4",
        )


async def test_sparse_scores_use_the_knowledge_bases_own_statistics(tmp_path: Path) -> None:
    """Per-tenant IDF: another knowledge base full of a word does not change this one's scores."""
    results: dict[str, list[tuple[str, float]]] = {}
    for layout in ("qdrant", "qdrant-shared"):
        async with running(make_settings(layout, tmp_path / layout)) as served:
            await ensure(served, "mine")
            await upsert(
                served, "mine", [*twin_points("mine"), make_point(5, E0, "c.txt", text="苹果 banana")]
            )
            await ensure(served, "noisy")
            noise = [make_point(100 + n, E0, "n.txt", text=f"香蕉 香蕉 {n}") for n in range(20)]
            await upsert(served, "noisy", noise)
            reply = await served.stub.Search(
                pb.SearchRequest(
                    collection="mine", query_text="香蕉 苹果", mode=pb.SEARCH_MODE_SPARSE, top_k=10
                )
            )
            results[layout] = [(h.chunk_id, round(h.score, 6)) for h in reply.hits]
    assert results["qdrant"] and results["qdrant"] == results["qdrant-shared"]


async def test_file_chats_use_the_shared_collection_in_per_collection_layout(tmp_path: Path) -> None:
    async with running(make_settings("qdrant", tmp_path)) as served:
        client = backend_of(served).client
        # A file chat's own collection from before it moved (dropped with the chat).
        await client.create_collection(
            "tmp_old", vectors_config={DENSE: models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        )
        await ensure(served, "kb")
        await ensure(served, "tmp_chat1")
        await upsert(served, "kb", [make_point(1, E0)])
        await upsert(served, "tmp_chat1", [make_point(1, E0, text="chat")])
        names = {c.name for c in (await client.get_collections()).collections}
        assert names == {"kb", "tmp_old", SHARED_4}
        shared_points = (await client.scroll(SHARED_4, limit=10))[0]
        assert {(p.payload or {}).get(schema.KB) for p in shared_points} == {"tmp_chat1"}
        assert [t for *_, t in await hits(served, "tmp_chat1")] == ["chat"]
        assert (await count(served, "kb"), await count(served, "tmp_chat1")) == (1, 1)
        assert (await served.stub.DropCollection(pb.DropCollectionRequest(collection="tmp_chat1"))).dropped
        assert (await served.stub.DropCollection(pb.DropCollectionRequest(collection="tmp_old"))).dropped
        assert {c.name for c in (await client.get_collections()).collections} == {"kb", SHARED_4}
        assert await count(served, "kb") == 1


@pytest.mark.parametrize("layout", ["qdrant", "qdrant-shared"])
async def test_cluster_settings_shape_new_collections_and_searches_still_answer(
    layout: str, tmp_path: Path
) -> None:
    settings = make_settings(
        layout,
        tmp_path,
        qdrant_on_disk_vectors=True,
        qdrant_quantization="int8",
        qdrant_write_ordering="strong",
        qdrant_read_consistency="majority",
    )
    async with running(settings) as served:
        await ensure(served, "kb")
        await upsert(served, "kb", twin_points("kb"))
        assert len(await hits(served, "kb", "香蕉")) == 3
        assert len(await hits(served, "kb", mode=pb.SEARCH_MODE_DENSE)) == 3
        collection = SHARED_4 if layout == "qdrant-shared" else "kb"
        info = await backend_of(served).client.get_collection(collection)
        vectors = info.config.params.vectors
        assert isinstance(vectors, dict) and vectors[DENSE].on_disk is True
        sparse = (info.config.params.sparse_vectors or {})[SPARSE]
        assert sparse.index is not None and sparse.index.on_disk is True


def test_collection_params_carry_every_cluster_setting(tmp_path: Path) -> None:
    """Local mode keeps no shard or quantization config, so the request itself is checked."""
    settings = make_settings(
        "qdrant",
        tmp_path,
        qdrant_shard_number=6,
        qdrant_replication_factor=3,
        qdrant_write_consistency_factor=2,
        qdrant_on_disk_payload=True,
        qdrant_quantization="int8",
        qdrant_quantization_quantile=0.95,
        qdrant_quantization_oversampling=3.0,
    )
    own = schema.collection_params(settings, 384, shared=False)
    assert (own["shard_number"], own["replication_factor"], own["write_consistency_factor"]) == (6, 3, 2)
    assert own["on_disk_payload"] is True
    assert own["quantization_config"] == models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.95, always_ram=True)
    )
    assert own["vectors_config"][DENSE].size == 384 and own["vectors_config"][DENSE].on_disk is None
    assert "hnsw_config" not in own
    shared = schema.collection_params(settings, 384, shared=True)
    assert shared["hnsw_config"] == models.HnswConfigDiff(m=0, payload_m=16)
    assert schema.dense_search_params(settings) == models.SearchParams(
        quantization=models.QuantizationSearchParams(rescore=True, oversampling=3.0)
    )
    assert schema.write_ordering(settings) is models.WriteOrdering.STRONG
    tenant_index = dict(schema.payload_indexes(shared=True))[schema.KB]
    assert tenant_index == models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    assert schema.KB not in dict(schema.payload_indexes(shared=False))
    for shared_layout in (False, True):  # restricted searches filter by acl in either layout
        indexes = dict(schema.payload_indexes(shared=shared_layout))
        assert indexes[ACL] == indexes[FILE_NAME] == models.PayloadSchemaType.KEYWORD
    plain = make_settings("qdrant", tmp_path)
    assert schema.collection_params(plain, 4, shared=False)["quantization_config"] is None
    assert schema.dense_search_params(plain) is None
