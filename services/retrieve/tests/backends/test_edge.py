"""Edge backend behaviour beyond the congruence tests: files, restarts, index builds."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from qdrant_edge import UpdateOperation

from services.common.errors import FailedPrecondition
from services.retrieve.backends import edge_collection
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_shard import (
    OPTIMIZING_DIR,
    RETIRED_DIR,
    SHARD_DIR,
    ShardOptions,
    ShardUnit,
)
from services.retrieve.scores import score_from_cosine
from services.retrieve.tests.conftest import (
    Running,
    expect_error,
    make_point,
    make_settings,
    point_id,
    running,
)
from zhiku.v1 import retrieve_pb2 as pb

KB = "手册"
DIM = 16


def vectors(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((count, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


async def seed(retrieve: Running, count: int, start: int = 0, file_name: str = "a.txt") -> np.ndarray:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    data = vectors(count, seed=start)
    points = [make_point(start + i, row.tolist(), file_name) for i, row in enumerate(data)]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))
    return data


async def top_id(retrieve: Running, vector: list[float]) -> str:
    reply = await retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=vector, top_k=1))
    return reply.hits[0].chunk_id


async def count(retrieve: Running) -> int:
    return (await retrieve.stub.Stats(pb.StatsRequest(collection=KB))).points


def edge(retrieve: Running) -> EdgeBackend:
    assert isinstance(retrieve.backend, EdgeBackend)
    return retrieve.backend


async def write_shard(retrieve: Running) -> ShardUnit:
    """The shard that takes new points (the only one below edge_shard_points)."""
    return (await edge(retrieve).collection(KB)).units[-1]


async def test_points_survive_a_restart(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path)
    async with running(settings) as first:
        data = await seed(first, 50)
    async with running(settings) as second:
        assert (await second.stub.Stats(pb.StatsRequest(collection=KB))) == pb.StatsResponse(
            exists=True, points=50, dimension=DIM, sparse=True
        )
        assert await top_id(second, data[17].tolist()) == point_id(17)


async def test_default_dir_is_under_data_dir(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path)
    assert settings.shard_root == tmp_path / "data" / "vectors"
    async with running(settings) as served:
        await seed(served, 3)
    assert (settings.shard_root / KB / SHARD_DIR).is_dir()


async def test_second_process_on_same_dir_fails_fast(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path)
    async with running(settings) as first:
        await seed(first, 5)
        with pytest.raises(FailedPrecondition, match="in use by another retrieve process"):
            async with running(settings):
                pass
        assert await count(first) == 5


async def test_drop_removes_the_directory(tmp_path: Path) -> None:
    async with running(make_settings("edge", tmp_path)) as served:
        await seed(served, 5)
        root = served.settings.shard_root
        assert (root / KB).is_dir()
        assert (await served.stub.DropCollection(pb.DropCollectionRequest(collection=KB))).dropped
        assert not (root / KB).exists()
        assert [p.name for p in root.iterdir() if not p.name.startswith("~lock")] == []


async def test_optimize_keeps_writes_made_during_the_build(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path, edge_indexing_threshold_kb=1)
    async with running(settings) as served:
        data = await seed(served, 300)
        collection = await write_shard(served)
        extra = vectors(20, seed=1000)
        seen_during_build: list[str] = []

        async def write_while_copy_is_stale() -> None:
            points = [make_point(1000 + i, row.tolist(), "late.txt") for i, row in enumerate(extra)]
            await served.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))
            await served.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="a.txt"))
            await served.stub.Upsert(
                pb.UpsertRequest(collection=KB, points=[make_point(5, data[5].tolist())])
            )
            seen_during_build.append(await top_id(served, extra[3].tolist()))

        assert await collection.optimize(before_swap=write_while_copy_is_stale) == "optimized"
        assert seen_during_build == [point_id(1003)]
        # All three writes were applied to the copy before the swap, none while calls waited.
        assert (collection.last_build["caught_up_writes"], collection.last_build["replayed_writes"]) == (3, 0)
        points, indexed = await collection.info()
        assert (points, await count(served)) == (21, 21)
        assert indexed > 0
        assert await top_id(served, extra[7].tolist()) == point_id(1007)
        assert await top_id(served, data[5].tolist()) == point_id(5)
        deleted = await served.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="a.txt"))
        assert deleted.deleted == 1
        leftovers = {OPTIMIZING_DIR, RETIRED_DIR, "~trash"} & {p.name for p in collection.root.iterdir()}
        assert leftovers == set()
    async with running(settings) as again:
        assert await count(again) == 20
        assert await top_id(again, extra[11].tolist()) == point_id(1011)


async def test_writes_made_while_the_copy_catches_up_are_replayed_in_the_swap(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path, edge_indexing_threshold_kb=1)
    async with running(settings) as served:
        await seed(served, 300)
        collection = await write_shard(served)
        loop = asyncio.get_running_loop()
        late = vectors(5, seed=2000)
        catch_up = collection._catch_up

        async def write_late() -> None:
            points = [make_point(2000 + i, row.tolist(), "late.txt") for i, row in enumerate(late)]
            await served.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))

        def catch_up_then_write(copy: Path, count: int) -> None:
            catch_up(copy, count)
            asyncio.run_coroutine_threadsafe(write_late(), loop).result(timeout=30)

        collection._catch_up = catch_up_then_write  # type: ignore[method-assign]  # the test's hook

        async def write_before_catch_up() -> None:
            await seed(served, 10, start=1000, file_name="early.txt")

        assert await collection.optimize(before_swap=write_before_catch_up) == "optimized"
        assert (collection.last_build["caught_up_writes"], collection.last_build["replayed_writes"]) == (1, 1)
        assert await count(served) == 315
        assert await top_id(served, late[2].tolist()) == point_id(2002)
        assert await collection.unindexed() == 15  # the late writes are searched exactly until the next build


async def test_optimize_with_nothing_to_index_is_unchanged(tmp_path: Path) -> None:
    async with running(make_settings("edge", tmp_path)) as served:
        await seed(served, 10)
        assert await edge(served).optimize(KB) == "unchanged"
        assert await count(served) == 10


async def test_failed_build_leaves_the_live_shard_serving(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path, edge_indexing_threshold_kb=1, edge_optimize_timeout_s=0.001)
    async with running(settings) as served:
        data = await seed(served, 100)
        collection = await write_shard(served)
        assert await collection.optimize() == "failed"
        assert not (collection.root / OPTIMIZING_DIR).exists()
        await seed(served, 10, start=500, file_name="b.txt")
        assert await count(served) == 110
        assert await top_id(served, data[42].tolist()) == point_id(42)


async def test_background_build_runs_after_writes_settle(tmp_path: Path) -> None:
    settings = make_settings(
        "edge",
        tmp_path,
        edge_indexing_threshold_kb=1,
        edge_optimize_delay_s=0.5,
        edge_optimize_min_unindexed=1,
    )
    async with running(settings) as served:
        data = await seed(served, 200)
        collection = await write_shard(served)
        # Sparse vectors count as indexed at once; only the dense HNSW part waits for the build.
        assert await collection.unindexed() == 200
        for _ in range(600):  # wait (up to a minute) for the index; no assertion on time
            if await collection.unindexed() == 0:
                break
            await asyncio.sleep(0.1)
        assert await collection.unindexed() == 0
        assert await top_id(served, data[99].tolist()) == point_id(99)


async def test_an_indexed_collection_builds_its_tail_once_the_engine_would_index_it(tmp_path: Path) -> None:
    """The first index waits for optimize_min_unindexed points; after that, points written
    later are built as soon as they fill the engine's indexing threshold (18 points of 16-d
    at 1 KB), instead of being scanned exactly on every search until the next 20k."""
    settings = make_settings(
        "edge",
        tmp_path,
        edge_indexing_threshold_kb=1,
        edge_optimize_delay_s=0.3,
        edge_optimize_min_unindexed=100,
    )
    assert ShardOptions.from_settings(settings).tail_to_build(DIM) == 18

    async def settled(unindexed: int) -> None:
        for _ in range(600):  # up to a minute; no assertion on time
            if await collection.unindexed() == unindexed and not collection.building:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"unindexed stayed at {await collection.unindexed()}, wanted {unindexed}")

    async with running(settings) as served:
        await seed(served, 60)
        collection = await write_shard(served)
        assert not await collection.wants_build()  # 60 < 100 before the first index
        await seed(served, 60, start=100)
        await settled(0)
        short = await seed(served, 10, start=200, file_name="b.txt")
        await asyncio.sleep(1.0)  # three settle delays: a build would have started
        assert not await collection.wants_build()
        await settled(10)
        await seed(served, 10, start=300, file_name="c.txt")
        await settled(0)
        assert await top_id(served, short[4].tolist()) == point_id(204)
        assert await count(served) == 140


def test_tail_to_build_follows_the_vector_size_and_never_exceeds_the_first_threshold(tmp_path: Path) -> None:
    options = ShardOptions.from_settings(make_settings("edge", tmp_path))
    assert options.indexing_threshold_kb is None  # the engine's 10,000 KB
    assert options.tail_to_build(512) == 5500
    assert options.tail_to_build(384) == 7334
    assert options.tail_to_build(8) == options.optimize_min_unindexed == 20_000


async def test_drop_during_a_build_stops_it(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path, edge_indexing_threshold_kb=1)
    async with running(settings) as served:
        await seed(served, 300)
        build = asyncio.create_task((await edge(served).collection(KB)).optimize())
        await asyncio.sleep(0)
        assert (await served.stub.DropCollection(pb.DropCollectionRequest(collection=KB))).dropped
        await asyncio.gather(build, return_exceptions=True)
        assert not (served.settings.shard_root / KB).exists()
        await expect_error(
            served.stub.Search(pb.SearchRequest(collection=KB, vector=[1.0] * DIM)),
            grpc.StatusCode.NOT_FOUND,
            KB,
        )


async def test_interrupted_swap_and_create_are_recovered(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path)
    async with running(settings) as first:
        data = await seed(first, 30)
    root = settings.shard_root
    # Crash mid-swap: the live shard moved aside, a half-copied directory in its place.
    os.rename(root / KB / SHARD_DIR, root / KB / RETIRED_DIR)
    (root / KB / SHARD_DIR).mkdir()
    (root / KB / SHARD_DIR / "garbage").write_text("half a copy")
    (root / KB / OPTIMIZING_DIR).mkdir()
    (root / "~staging-deadbeef").mkdir()
    async with running(settings) as second:
        assert await count(second) == 30
        assert await top_id(second, data[3].tolist()) == point_id(3)
        names = {p.name for p in (root / KB).iterdir()}
        assert names == {"collection.json", SHARD_DIR}
        assert not (root / "~staging-deadbeef").exists()


@pytest.mark.parametrize("quantization", ["int8", "none"])
async def test_an_index_build_quantizes_the_vectors_and_searches_rescore_them(
    tmp_path: Path, quantization: str
) -> None:
    """With int8 quantization (the default) a built segment holds quantized vectors next to
    the originals; a dense search still returns the exact best points with their exact
    cosine scores, since the quantized candidates are rescored with the originals."""
    settings = make_settings("edge", tmp_path, edge_indexing_threshold_kb=1, edge_quantization=quantization)
    async with running(settings) as served:
        data = await seed(served, 300)
        shard = await write_shard(served)
        assert await shard.optimize() == "optimized"
        quantized = list(shard.root.rglob("quantized.data"))
        assert bool(quantized) == (quantization == "int8")
        for query in vectors(5, seed=77):
            reply = await served.stub.Search(pb.SearchRequest(collection=KB, vector=query.tolist(), top_k=10))
            exact = np.argsort(-(data @ query))[:10]
            assert [hit.chunk_id for hit in reply.hits] == [point_id(int(i)) for i in exact]
            assert [hit.score for hit in reply.hits] == pytest.approx(
                [score_from_cosine(float(data[i] @ query)) for i in exact], abs=1e-5
            )


async def test_a_big_upsert_reaches_the_engine_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine write holds the GIL until it returns, so searches would wait for a whole
    batch; the points go in slices of WRITE_SLICE, and every one of them lands."""
    sizes: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(UpdateOperation, name)

        def upsert_points(self, points: list[Any]) -> Any:
            sizes.append(len(points))
            return UpdateOperation.upsert_points(points)

    monkeypatch.setattr(edge_collection, "UpdateOperation", Counting())
    async with running(make_settings("edge", tmp_path)) as served:
        data = await seed(served, 2 * edge_collection.WRITE_SLICE + 22)
        assert sizes == [edge_collection.WRITE_SLICE, edge_collection.WRITE_SLICE, 22]
        assert await count(served) == len(data)
        assert await top_id(served, data[-1].tolist()) == point_id(len(data) - 1)


@pytest.mark.parametrize("yield_ms", [1000.0, 0.0])
async def test_write_slices_wait_while_a_search_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yield_ms: float
) -> None:
    """A search held inside its engine calls: an upsert's slices wait for it (up to
    edge_write_yield_ms) and land once it returns; with 0 they land at once."""
    held, entered = threading.Event(), threading.Event()
    search = edge_collection.EdgeCollection._search

    def held_search(self: Any, *args: Any) -> Any:
        entered.set()
        held.wait(30)  # hang guard
        return search(self, *args)

    monkeypatch.setattr(edge_collection.EdgeCollection, "_search", held_search)
    async with running(make_settings("edge", tmp_path, edge_write_yield_ms=yield_ms)) as served:
        await seed(served, 4)
        searching = asyncio.ensure_future(top_id(served, vectors(1)[0].tolist()))
        assert await asyncio.to_thread(entered.wait, 30)
        writing = asyncio.ensure_future(seed(served, 2 * edge_collection.WRITE_SLICE, start=4))
        # Waiting: not done in 0.4 s (its slices wait a second each). Not waiting: done while
        # the search is still held (30 s: a hang guard on a busy machine).
        done, _ = await asyncio.wait({writing}, timeout=0.4 if yield_ms else 30)
        assert bool(done) == (yield_ms == 0)
        held.set()
        await asyncio.gather(searching, writing)
        assert await count(served) == 4 + 2 * edge_collection.WRITE_SLICE


async def test_the_backend_sets_the_gil_switch_interval_while_it_runs(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    async with running(make_settings("edge", tmp_path, edge_switch_interval_ms=2.5)) as served:
        await seed(served, 3)
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    assert sys.getswitchinterval() == before
