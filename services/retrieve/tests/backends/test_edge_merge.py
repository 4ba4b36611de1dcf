"""Merging sealed edge shards, through the real gRPC server and the real optimizer child:
fewer shards with the same answers, writes made during a merge kept in order, and a crash on
either side of the commit point recovered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.retrieve.backends import edge_collection, edge_shard
from services.retrieve.backends.edge_collection import EdgeCollection
from services.retrieve.backends.edge_merge import MERGE_PREFIX, RECORD_FILE, MergeRecord, plan
from services.retrieve.tests.backends.test_edge_shards import (
    KB,
    MODES,
    answers,
    collection,
    corpus,
    history,
    point,
    points,
    same,
    sharded,
    upsert,
    visible_files,
)
from services.retrieve.tests.conftest import Running, make_settings, point_id, running
from zhiku.v1 import retrieve_pb2 as pb


def merging(tmp_path: Path, **overrides: Any) -> Any:
    """Seal every 40 points and merge sealed shards up to half the knowledge base."""
    return sharded(tmp_path, edge_merge_fraction=0.5, **overrides)


async def settled(served: Running) -> EdgeCollection:
    opened = await collection(served)
    for _ in range(600):
        if not opened.merging:
            return opened
        await asyncio.sleep(0.05)
    raise AssertionError("the merge did not finish")


def test_plan_takes_the_smallest_shards_that_fit() -> None:
    assert plan([40, 10, None, 20, 30], total=190, fraction=0.5) == [1, 3, 4]
    assert plan([40, 10, None, 20, 30], total=200, fraction=0.5) == [0, 1, 3, 4]
    assert plan([40, 10, None, 20, 30], total=100, fraction=0.5) == [1, 3]
    assert plan([40, 10, None, 20], total=50, fraction=0.5) == []  # one shard alone: nothing to merge
    assert plan([None, 5, None, 5], total=10, fraction=0.5) == []  # 10 > 5
    assert plan([5, 5, 5], total=1000, fraction=0.0) == []


async def test_merged_shards_answer_like_one_shard(tmp_path: Path) -> None:
    async with running(make_settings("edge", tmp_path / "one")) as single:
        await history(single)
        baseline, total = await answers(single), await points(single)
    async with running(merging(tmp_path / "many")) as many:
        await history(many)
        opened = await settled(many)
        assert len(opened.units) < 6  # six without merging (see test_edge_shards)
        assert await points(many) == total
        assert sum(unit.terms.docs for unit in opened.units) == total
        same(await answers(many), baseline)
        root = opened.root
        names = {entry.name for entry in root.iterdir()}
        assert {unit.dirname for unit in opened.units} <= names
        assert not [n for n in names if n.startswith((MERGE_PREFIX, "~trash")) or n == RECORD_FILE]
        for unit in opened.units[:-1]:  # every sealed shard, merged ones too, saved its statistics
            assert (root / (unit.dirname + edge_collection.TERMS_SUFFIX)).is_file()
        stale = {f"{n}{edge_collection.TERMS_SUFFIX}" for n in names} - names
        assert not {n for n in names if n.endswith(edge_collection.TERMS_SUFFIX)} - {
            unit.dirname + edge_collection.TERMS_SUFFIX for unit in opened.units
        }, stale
    async with running(merging(tmp_path / "many")) as reopened:
        assert await points(reopened) == total
        same(await answers(reopened), baseline)


def pause_merge(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], Awaitable[None]]) -> list[str]:
    """Run ``meanwhile`` after the merged shard's index is built and before it is committed
    (the sources still serve); returns the reports of the builds that ran."""
    built: list[str] = []
    real = edge_shard.run_optimizer

    async def optimizer_then_writes(path: Path, options: Any) -> dict[str, Any]:
        report = await real(path, options)
        if path.name.startswith(MERGE_PREFIX) and not built:
            built.append(path.name)
            await meanwhile()
        return report

    monkeypatch.setattr(edge_collection, "run_optimizer", optimizer_then_writes)
    return built


async def test_writes_during_a_merge_are_kept_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = corpus(200)
    fresh = corpus(20, seed=5)
    async with running(sharded(tmp_path)) as loading:  # five sealed shards, no merging
        await upsert(loading, [point(i, rows[i], f"f{i % 4}.txt") for i in range(200)])
    live: list[Running] = []

    async def writes() -> None:
        """Access changes, an override of points held by the sources and a delete: the
        same access change reaches several sources, and only the last one may survive."""
        stub = live[0].stub
        await stub.SetFileAcl(pb.SetFileAclRequest(collection=KB, file_name="f1.txt", acl=["user:u_a"]))
        overrides = [point(i, fresh[k], "f1.txt") for k, i in enumerate(range(1, 40, 4))]
        await stub.Upsert(pb.UpsertRequest(collection=KB, points=overrides))
        await stub.SetFileAcl(pb.SetFileAclRequest(collection=KB, file_name="f1.txt", acl=["user:u_b"]))
        await stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="f2.txt"))

    built = pause_merge(monkeypatch, writes)
    async with running(merging(tmp_path)) as served:
        live.append(served)
        assert await points(served) == 200  # opening the collection starts merging
        opened = await settled(served)
        assert built, "no merge ran"
        assert len(opened.units) < 6
        assert await points(served) == 150  # f2.txt's 50 points deleted, overrides in place
        for reader, visible in (("user:u_a", False), ("user:u_b", True)):
            for mode in MODES.values():
                files = await visible_files(served, rows[1], reader, mode)
                assert ("f1.txt" in files) is visible
                assert "f2.txt" not in files
        got = await served.stub.Search(
            pb.SearchRequest(collection=KB, vector=fresh[0][0], mode=pb.SEARCH_MODE_DENSE, top_k=1)
        )
        assert (got.hits[0].chunk_id, got.hits[0].text) == (point_id(1), fresh[0][1])
        assert sum(unit.terms.docs for unit in opened.units) == 150


async def test_a_merge_that_fails_before_its_commit_leaves_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = corpus(200)

    refused: list[tuple[str, ...]] = []

    def refuse(self: MergeRecord, root: Path) -> None:
        refused.append(self.sources)
        raise OSError("disk full")

    monkeypatch.setattr(MergeRecord, "write", refuse)
    async with running(merging(tmp_path)) as served:
        await upsert(served, [point(i, rows[i], f"f{i % 4}.txt") for i in range(200)])
        opened = await settled(served)
        assert refused, "no merge reached its commit"
        assert len(opened.units) == 6  # every merge failed: the five sealed shards are intact
        assert [unit.merging for unit in opened.units] == [False] * 6
        assert await points(served) == 200
        assert not [e for e in opened.root.iterdir() if e.name.startswith(MERGE_PREFIX)]
        # The sources still take deletes (nothing journals them any more).
        await served.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="f0.txt"))
        assert await points(served) == 150
    monkeypatch.undo()
    async with running(sharded(tmp_path)) as again:
        assert await points(again) == 150


async def test_a_merge_interrupted_after_its_commit_is_finished_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(make_settings("edge", tmp_path / "one")) as single:
        await history(single)
        baseline, total = await answers(single), await points(single)

    def crash(root: Path, record: MergeRecord, stats_suffix: str) -> list[Path]:
        raise SystemError("the process died right after writing the record")

    settings = merging(tmp_path / "many")
    async with running(sharded(tmp_path / "many")) as loading:  # six shards, no merging
        await history(loading)
    monkeypatch.setattr(edge_collection, "roll_forward", crash)
    async with running(settings) as first:
        opened = await collection(first)  # opening it starts merging
        for _ in range(600):
            if (opened.root / RECORD_FILE).exists() and not opened.merging:
                break
            await asyncio.sleep(0.05)
        record = MergeRecord.read(opened.root)
        assert record is not None
    monkeypatch.undo()
    root = settings.shard_root / KB
    assert (root / record.staging).is_dir() and all((root / name).is_dir() for name in record.sources)
    async with running(sharded(tmp_path / "many")) as second:  # no merging: only the recovery
        reopened = await collection(second)
        assert [unit.dirname for unit in reopened.units].count(record.into) == 1
        assert not set(record.sources[:-1]) & {unit.dirname for unit in reopened.units}
        assert await points(second) == total
        same(await answers(second), baseline)
    names = {entry.name for entry in root.iterdir()}
    assert RECORD_FILE not in names and record.staging not in names


async def test_an_uncommitted_merge_directory_is_discarded_at_open(tmp_path: Path) -> None:
    settings = sharded(tmp_path)
    async with running(settings) as first:
        await history(first)
        before, total = await answers(first), await points(first)
    root = settings.shard_root / KB
    (root / f"{MERGE_PREFIX}0123").mkdir()
    (root / f"{MERGE_PREFIX}0123" / "segment").write_text("half a merge")
    (root / (RECORD_FILE + ".partial")).write_text("{")
    async with running(settings) as second:
        assert await points(second) == total
        same(await answers(second), before)
    assert not [
        e for e in root.iterdir() if e.name.startswith(MERGE_PREFIX) or e.name.startswith(RECORD_FILE)
    ]
