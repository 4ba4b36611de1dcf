"""Congruence tests: the same calls through the real gRPC server against every backend."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from services.retrieve.tests.conftest import Running, expect_error, make_point, point_id
from zhiku.v1 import common_pb2
from zhiku.v1 import retrieve_pb2 as pb

KB = "知识库_kb-1.v2"
DIM = 4

# Query is E0; expected score (1 + cos) / 2 for each stored point, nearest first.
E0 = [1.0, 0.0, 0.0, 0.0]
POINTS = [
    (0, E0, "a.txt", 1.0),
    (1, [0.9, 0.1, 0.0, 0.0], "a.txt", (1 + 0.9 / (0.9**2 + 0.1**2) ** 0.5) / 2),
    (2, [1.0, 1.0, 0.0, 0.0], "c.txt", (1 + 0.5**0.5) / 2),
    (3, [0.0, 1.0, 0.0, 0.0], "b.txt", 0.5),
    (4, [-1.0, 0.0, 0.0, 0.0], "b.txt", 0.0),
]


async def seed(retrieve: Running, collection: str = KB) -> None:
    created = await retrieve.stub.EnsureCollection(
        pb.EnsureCollectionRequest(collection=collection, dimension=DIM)
    )
    assert created.created
    points = [make_point(n, vector, file_name) for n, vector, file_name, _ in POINTS]
    reply = await retrieve.stub.Upsert(pb.UpsertRequest(collection=collection, points=points))
    assert reply.upserted == len(POINTS)


async def search(retrieve: Running, vector: list[float] = E0, **fields: Any) -> list[common_pb2.Passage]:
    fields.setdefault("top_k", 10)
    reply = await retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=vector, **fields))
    return list(reply.hits)


async def stats(retrieve: Running, collection: str = KB) -> pb.StatsResponse:
    return await retrieve.stub.Stats(pb.StatsRequest(collection=collection))


async def test_ensure_collection_is_idempotent(retrieve: Running) -> None:
    first = await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    second = await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    assert (first.created, second.created) == (True, False)
    assert (await stats(retrieve)) == pb.StatsResponse(exists=True, points=0, dimension=DIM, sparse=True)


async def test_ensure_with_other_dimension_is_invalid(retrieve: Running) -> None:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    await expect_error(
        retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=8)),
        grpc.StatusCode.INVALID_ARGUMENT,
        KB,
        "dimension 4",
    )
    for bad in (0, -3, 70000):
        await expect_error(
            retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection="other", dimension=bad)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dimension",
        )
    assert not (await stats(retrieve, "other")).exists


async def test_search_returns_nearest_first_with_mapped_scores(retrieve: Running) -> None:
    await seed(retrieve)
    hits = await search(retrieve)
    assert [h.chunk_id for h in hits] == [point_id(n) for n, *_ in POINTS]
    assert [h.score for h in hits] == pytest.approx([expected for *_, expected in POINTS], abs=1e-5)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert (top.knowledge_base, top.file_name, top.chunk_index, top.text) == (KB, "a.txt", 0, "chunk 0")


async def test_top_k_limits_and_zero_means_default(retrieve: Running) -> None:
    await seed(retrieve)
    assert [h.chunk_id for h in await search(retrieve, top_k=2)] == [point_id(0), point_id(1)]
    default = retrieve.settings.default_top_k
    assert len(await search(retrieve, top_k=0)) == min(default, len(POINTS))


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(0.0, [0, 1, 2, 3, 4]), (0.5, [0, 1, 2, 3]), (0.9, [0, 1]), (0.99, [0, 1]), (1.0, [0])],
)
async def test_score_threshold_keeps_scores_at_or_above(
    retrieve: Running, threshold: float, expected: list[int]
) -> None:
    await seed(retrieve)
    hits = await search(retrieve, score_threshold=threshold)
    assert [h.chunk_id for h in hits] == [point_id(n) for n in expected]
    assert all(h.score >= threshold for h in hits)


async def test_file_names_filter(retrieve: Running) -> None:
    await seed(retrieve)
    hits = await search(retrieve, file_names=["b.txt", "c.txt"])
    assert [h.chunk_id for h in hits] == [point_id(2), point_id(3), point_id(4)]
    assert {h.file_name for h in hits} == {"b.txt", "c.txt"}
    assert await search(retrieve, file_names=["missing.txt"]) == []
    combined = await search(retrieve, file_names=["b.txt"], score_threshold=0.4)
    assert [h.chunk_id for h in combined] == [point_id(3)]


async def test_delete_by_file_removes_exactly_that_file(retrieve: Running) -> None:
    await seed(retrieve)
    reply = await retrieve.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="b.txt"))
    assert reply.deleted == 2
    assert (await stats(retrieve)).points == len(POINTS) - 2
    hits = await search(retrieve)
    assert [h.chunk_id for h in hits] == [point_id(0), point_id(1), point_id(2)]
    again = await retrieve.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="b.txt"))
    assert again.deleted == 0
    await expect_error(
        retrieve.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "file_name",
    )


async def test_drop_collection_removes_everything(retrieve: Running) -> None:
    await seed(retrieve)
    await seed(retrieve, "keep")
    assert (await retrieve.stub.DropCollection(pb.DropCollectionRequest(collection=KB))).dropped
    assert (await stats(retrieve)) == pb.StatsResponse(exists=False)
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=E0)), grpc.StatusCode.NOT_FOUND, KB
    )
    assert not (await retrieve.stub.DropCollection(pb.DropCollectionRequest(collection=KB))).dropped
    assert (await stats(retrieve, "keep")).points == len(POINTS)
    # The name is free again, with any dimension.
    recreated = await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=8))
    assert recreated.created
    assert (await stats(retrieve)) == pb.StatsResponse(exists=True, points=0, dimension=8, sparse=True)


async def test_unknown_collection_is_not_found(retrieve: Running) -> None:
    name = "没有这个库"
    calls = [
        retrieve.stub.Search(pb.SearchRequest(collection=name, vector=E0)),
        retrieve.stub.Upsert(pb.UpsertRequest(collection=name, points=[make_point(0, E0)])),
        retrieve.stub.Upsert(pb.UpsertRequest(collection=name)),
        retrieve.stub.DeleteByFile(pb.DeleteByFileRequest(collection=name, file_name="a.txt")),
    ]
    for call in calls:
        await expect_error(call, grpc.StatusCode.NOT_FOUND, name)
    assert (await stats(retrieve, name)) == pb.StatsResponse(exists=False)
    assert not (await retrieve.stub.DropCollection(pb.DropCollectionRequest(collection=name))).dropped


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "a\\b", "..", ".", "x..y", "a b", "k\x00b", "x" * 65, "kb?"]
)
async def test_bad_names_are_invalid_everywhere(retrieve: Running, name: str) -> None:
    calls = [
        retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=name, dimension=DIM)),
        retrieve.stub.Upsert(pb.UpsertRequest(collection=name, points=[make_point(0, E0)])),
        retrieve.stub.Search(pb.SearchRequest(collection=name, vector=E0)),
        retrieve.stub.DeleteByFile(pb.DeleteByFileRequest(collection=name, file_name="a.txt")),
        retrieve.stub.DropCollection(pb.DropCollectionRequest(collection=name)),
        retrieve.stub.Stats(pb.StatsRequest(collection=name)),
    ]
    for call in calls:
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "knowledge base name")


async def test_dimension_mismatch_is_invalid_and_service_stays_up(retrieve: Running) -> None:
    await seed(retrieve)
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=[1.0, 0.0, 0.0])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "dimension 3",
        "dimension 4",
    )
    await expect_error(
        retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[make_point(9, [1.0] * 5)])),
        grpc.StatusCode.INVALID_ARGUMENT,
        point_id(9),
        "dimension 5",
    )
    assert (await stats(retrieve)).points == len(POINTS)
    assert len(await search(retrieve)) == len(POINTS)


@pytest.mark.parametrize(
    ("point", "fragment"),
    [
        (pb.Point(id="not-a-uuid", vector=E0, file_name="a.txt"), "not a UUID"),
        (pb.Point(id=point_id(1), vector=[], file_name="a.txt"), "empty"),
        (pb.Point(id=point_id(1), vector=[0.0] * DIM, file_name="a.txt"), "all zeros"),
        (pb.Point(id=point_id(1), vector=[float("nan"), 1, 0, 0], file_name="a.txt"), "NaN"),
        # Batches are checked in one array; one of another dimension is checked point by point.
        (pb.Point(id=point_id(1), vector=[float("nan")], file_name="a.txt"), "NaN"),
        (pb.Point(id=point_id(1), vector=E0, file_name=""), "file_name"),
        (pb.Point(id=point_id(1), vector=E0, file_name="a.txt", chunk_index=-1), "chunk_index"),
    ],
)
async def test_bad_points_are_invalid(retrieve: Running, point: pb.Point, fragment: str) -> None:
    await seed(retrieve)
    await expect_error(
        retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[make_point(7, E0), point])),
        grpc.StatusCode.INVALID_ARGUMENT,
        fragment,
    )
    assert (await stats(retrieve)).points == len(POINTS)  # nothing of the batch was written


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"top_k": -1}, "top_k"),
        ({"top_k": 100_000}, "top_k"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": -0.1}, "score_threshold"),
        ({"score_threshold": float("nan")}, "score_threshold"),
        ({"vector": []}, "empty"),
        ({"vector": [0.0] * DIM}, "all zeros"),
        ({"file_names": ["a.txt", ""]}, "file_names"),
    ],
)
async def test_bad_searches_are_invalid(retrieve: Running, fields: dict, fragment: str) -> None:
    await seed(retrieve)
    request = {"collection": KB, "vector": E0, **fields}
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(**request)), grpc.StatusCode.INVALID_ARGUMENT, fragment
    )


async def test_reupserting_same_ids_overwrites(retrieve: Running) -> None:
    await seed(retrieve)
    rewritten = [make_point(n, vector, "a.txt", text=f"v2 {n}") for n, vector, *_ in POINTS]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=rewritten))
    assert (await stats(retrieve)).points == len(POINTS)
    hits = await search(retrieve)
    assert len(hits) == len(POINTS)
    assert {h.text for h in hits} == {f"v2 {n}" for n, *_ in POINTS}
    assert {h.file_name for h in hits} == {"a.txt"}
    # A batch repeating an id counts and keeps it once (the last occurrence wins).
    repeated = [make_point(0, E0, text="first"), make_point(0, E0, text="last")]
    assert (await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=repeated))).upserted == 1
    assert (await search(retrieve, top_k=1))[0].text == "last"


async def test_ids_come_back_canonical(retrieve: Running) -> None:
    await seed(retrieve)
    shouting = pb.Point(id=point_id(42).upper(), vector=[0, 0, 1, 0], file_name="d.txt", text="upper id")
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[shouting]))
    hits = await search(retrieve, vector=[0.0, 0.0, 1.0, 0.0], top_k=1)
    assert hits[0].chunk_id == point_id(42)


async def test_payload_and_metadata_round_trip(retrieve: Running) -> None:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    metadata = {"page": "3", "标题": "第一章 总则", "empty": "", "path": "a/b/c.md#h2"}
    text = "知识库问答：检索增强生成。\nLine two with émojis 🚀"
    point = make_point(5, E0, "报告 2024.pdf", text=text, metadata=metadata)
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[point, make_point(6, [0, 1, 0, 0])]))
    hits = await search(retrieve, file_names=["报告 2024.pdf"])
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.file_name, hit.chunk_index, hit.text, dict(hit.metadata)) == (
        "报告 2024.pdf",
        5,
        text,
        metadata,
    )
    plain = await search(retrieve, vector=[0.0, 1.0, 0.0, 0.0], top_k=1)
    assert dict(plain[0].metadata) == {}
