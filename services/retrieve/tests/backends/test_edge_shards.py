"""Edge collections spread over several shards, through the real gRPC server: sealing,
overrides and deletes across shards, crash recovery, access lists, and searches equal to a
one-shard collection holding the same points (hits, scores, dense scores, every mode)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_edge import EdgeShard, Point, QueryBatchRequest, UpdateOperation
from qdrant_edge import SparseVector as EdgeSparseVector

from services.common.sparse import SparseEncoder
from services.retrieve.backends import edge_collection, edge_shard
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_collection import EdgeCollection, create_on_disk
from services.retrieve.backends.edge_shard import RETIRED_DIR, SHARD_DIR
from services.retrieve.domain import PointRecord
from services.retrieve.tests.conftest import Running, make_point, make_settings, point_id, running
from zhiku.v1 import retrieve_pb2 as pb

KB = "分片"
DIM = 8
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "mountain",
    "harbor",
    "lantern",
    "copper",
    "violet",
    "meadow",
    "signal",
    "ember",
]
MODES: dict[str, pb.SearchMode] = {
    "hybrid": pb.SEARCH_MODE_HYBRID,
    "dense": pb.SEARCH_MODE_DENSE,
    "sparse": pb.SEARCH_MODE_SPARSE,
}
Answer = list[list[tuple[str, str, float, float, str]]]
FUSIONS: dict[str, pb.HybridFusion] = {"dbsf": pb.HYBRID_FUSION_DBSF, "rrf": pb.HYBRID_FUSION_RRF}


def sharded(tmp_path: Path, **overrides: Any) -> Any:
    """Seal the write shard every 40 points (no growth), so 200 points make five shards."""
    return make_settings("edge", tmp_path, edge_shard_points=40, edge_shard_growth=0.0, **overrides)


def corpus(count: int, start: int = 0, seed: int = 0) -> list[tuple[list[float], str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        vector = rng.standard_normal(DIM)
        words = rng.choice(WORDS, size=int(rng.integers(2, 9)), replace=True)
        rows.append(((vector / np.linalg.norm(vector)).tolist(), " ".join(words)))
    return rows


def point(n: int, row: tuple[list[float], str], file_name: str, **metadata: str) -> pb.Point:
    return make_point(n, row[0], file_name, text=row[1], metadata=metadata)


async def upsert(served: Running, points: list[pb.Point], batch: int = 20) -> None:
    await served.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    for i in range(0, len(points), batch):
        await served.stub.Upsert(pb.UpsertRequest(collection=KB, points=points[i : i + batch]))


async def collection(served: Running) -> EdgeCollection:
    assert isinstance(served.backend, EdgeBackend)
    return await served.backend.collection(KB)


async def points(served: Running) -> int:
    return (await served.stub.Stats(pb.StatsRequest(collection=KB))).points


async def history(served: Running) -> None:
    """The same writes for every layout: files spread over shards, a re-upload of one file as
    a new generation that overrides some ids, the old generation deleted, a file deleted,
    access lists on another."""
    rows = corpus(200)
    await upsert(
        served, [point(i, rows[i], f"f{i % 7}.txt", gen="1") for i in range(200)]
    )  # files span every shard
    again = corpus(30, seed=1)
    # Re-upload of f3.txt: ids 3, 10, 17, ... (held by sealed shards) are overridden.
    await upsert(served, [point(i, again[k], "f3.txt", gen="2") for k, i in enumerate(range(3, 200, 7))])
    await served.stub.DeleteByFile(
        pb.DeleteByFileRequest(collection=KB, file_name="f3.txt", keep_metadata={"gen": "2"})
    )
    await served.stub.DeleteByFile(pb.DeleteByFileRequest(collection=KB, file_name="f5.txt"))
    await served.stub.SetFileAcl(pb.SetFileAclRequest(collection=KB, file_name="f1.txt", acl=["user:u_a"]))


async def answers(served: Running) -> Answer:
    queries = corpus(6, seed=2)
    results = []
    for vector, text in queries:
        for mode in MODES.values():
            for fusion in FUSIONS.values():
                for fields in (
                    {},
                    {"file_names": ["f0.txt", "f1.txt"]},
                    {"enforce_acl": True, "reader_acl": ["user:u_b"]},
                ):
                    request = pb.SearchRequest(
                        collection=KB,
                        vector=vector,
                        query_text=text,
                        mode=mode,
                        fusion=fusion,
                        top_k=8,
                        **fields,
                    )
                    reply = await served.stub.Search(request)
                    results.append(
                        [(h.chunk_id, h.file_name, h.score, h.dense_score, h.text) for h in reply.hits]
                    )
    return results


async def visible_files(
    served: Running, row: tuple[list[float], str], reader: str, mode: pb.SearchMode
) -> set[str]:
    """The files of every hit a reader gets for ``row`` as the query (vector and text)."""
    request = pb.SearchRequest(
        collection=KB,
        vector=row[0],
        query_text=row[1],
        mode=mode,
        top_k=1000,
        enforce_acl=True,
        reader_acl=[reader],
    )
    return {hit.file_name for hit in (await served.stub.Search(request)).hits}


def same(got: Answer, want: Answer) -> None:
    """Equal scores in the same order, and the same hits wherever scores do not tie; among
    hits tied on a score the engine's order (and, at the cut, which of them is kept) is
    arbitrary even within one shard."""
    assert len(got) == len(want)
    for hits, expected in zip(got, want, strict=True):
        assert [h[2] for h in hits] == pytest.approx([e[2] for e in expected], rel=1e-5, abs=1e-6)
        groups: dict[float, tuple[set[tuple[str, str, float]], set[tuple[str, str, float]]]] = {}
        for h, e in zip(hits, expected, strict=True):
            mine, theirs = groups.setdefault(round(e[2], 5), (set(), set()))
            mine.add((h[0], h[4], round(h[3], 5)))
            theirs.add((e[0], e[4], round(e[3], 5)))
        last = round(expected[-1][2], 5) if expected else None
        for score, (mine, theirs) in groups.items():
            if score != last:
                assert mine == theirs


async def test_search_equals_a_single_shard_collection(tmp_path: Path) -> None:
    async with running(make_settings("edge", tmp_path / "one")) as single:
        await history(single)
        assert len((await collection(single)).units) == 1
        baseline, total = await answers(single), await points(single)
    async with running(sharded(tmp_path / "many")) as many:
        await history(many)
        assert len((await collection(many)).units) == 6  # five sealed, the write shard
        assert await points(many) == total == 200 - 29 + 29 - 28  # f5 had 28 points
        same(await answers(many), baseline)
    async with running(sharded(tmp_path / "many")) as reopened:  # statistics loaded from disk
        same(await answers(reopened), baseline)
    assert any(hit for hits in baseline for hit in hits)


async def test_sealing_starts_a_new_write_shard_and_saves_the_statistics(tmp_path: Path) -> None:
    async with running(sharded(tmp_path)) as served:
        rows = corpus(130)
        await upsert(served, [point(i, rows[i], "a.txt") for i in range(130)], batch=25)
        opened = await collection(served)
        assert [unit.dirname for unit in opened.units] == [SHARD_DIR, "shard-1", "shard-2"]
        assert [unit.sealed for unit in opened.units] == [True, True, False]
        assert [await unit.count() for unit in opened.units] == [50, 50, 30]
        assert [unit.terms.docs for unit in opened.units] == [50, 50, 30]
        root = opened.root
        assert (root / "shard.terms.npz").is_file() and (root / "shard-1.terms.npz").is_file()
        assert not (root / "shard-2.terms.npz").exists()
        assert await points(served) == 130


async def test_growth_makes_later_shards_bigger(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path, edge_shard_points=20, edge_shard_growth=1.0)
    async with running(settings) as served:
        rows = corpus(200)
        await upsert(served, [point(i, rows[i], "a.txt") for i in range(200)], batch=10)
        counts = [await unit.count() for unit in (await collection(served)).units]
        assert counts == [20, 20, 40, 80, 40]


async def test_overrides_and_deletes_are_exact_across_shards(tmp_path: Path) -> None:
    async with running(sharded(tmp_path)) as served:
        rows = corpus(120)
        await upsert(served, [point(i, rows[i], "doc.txt", gen="1") for i in range(120)])
        assert len((await collection(served)).units) == 4  # 40, 40, 40 sealed, empty write shard
        # New generation: the same ids for chunks 0..59 (now in the write shard), 60 new ones.
        fresh = corpus(120, seed=9)
        await upsert(served, [point(i, fresh[i], "doc.txt", gen="2") for i in range(60)])
        assert await points(served) == 120
        reply = await served.stub.Search(
            pb.SearchRequest(collection=KB, vector=fresh[7][0], mode=pb.SEARCH_MODE_DENSE, top_k=1)
        )
        assert (reply.hits[0].chunk_id, reply.hits[0].text) == (point_id(7), fresh[7][1])
        deleted = await served.stub.DeleteByFile(
            pb.DeleteByFileRequest(collection=KB, file_name="doc.txt", keep_metadata={"gen": "2"})
        )
        assert deleted.deleted == 60
        assert await points(served) == 60
        only = await served.stub.DeleteByFile(
            pb.DeleteByFileRequest(collection=KB, file_name="doc.txt", only_metadata={"gen": "1"})
        )
        assert only.deleted == 0
        opened = await collection(served)
        assert sum(unit.terms.docs for unit in opened.units) == 60
    async with running(sharded(tmp_path)) as again:
        assert await points(again) == 60
        assert sum(unit.terms.docs for unit in (await collection(again)).units) == 60


async def test_access_lists_hold_across_shards(tmp_path: Path) -> None:
    async with running(sharded(tmp_path)) as served:
        rows = corpus(100)
        points_ = []
        for i in range(100):
            p = point(i, rows[i], "secret.txt" if i % 2 else "open.txt")
            p.acl.extend(["user:u_a"] if i % 2 else ["*"])
            points_.append(p)
        await upsert(served, points_)

        for mode in MODES.values():
            assert await visible_files(served, rows[1], "user:u_b", mode) == {"open.txt"}
            assert await visible_files(served, rows[1], "user:u_a", mode) >= {"secret.txt"}
        updated = await served.stub.SetFileAcl(
            pb.SetFileAclRequest(collection=KB, file_name="secret.txt", acl=["user:u_b"])
        )
        assert updated.updated == 50  # every shard's points of the file
        for mode in MODES.values():
            assert "secret.txt" in await visible_files(served, rows[1], "user:u_b", mode)
            assert await visible_files(served, rows[1], "user:u_a", mode) == {"open.txt"}


async def test_crash_between_seal_and_swap_is_recovered(tmp_path: Path) -> None:
    settings = sharded(tmp_path)
    async with running(settings) as first:
        await history(first)
        before = await answers(first)
        total = await points(first)
    root = settings.shard_root / KB
    # The first sealed shard was mid-swap (moved aside, half a copy in its place), another
    # seal was creating its shard, and the statistics of a sealed shard were being replaced.
    os.rename(root / SHARD_DIR, root / RETIRED_DIR)
    (root / SHARD_DIR).mkdir()
    (root / SHARD_DIR / "garbage").write_text("half a copy")
    (root / "shard-1.optimizing~").mkdir()
    (root / "~new-0123").mkdir()
    shutil.copy(root / "shard-1.terms.npz", root / "shard-1.terms.npz.partial")
    async with running(settings) as second:
        assert await points(second) == total
        same(await answers(second), before)
    names = {p.name for p in root.iterdir()}
    assert not {RETIRED_DIR, "shard-1.optimizing~", "~new-0123", "shard-1.terms.npz.partial"} & names


async def test_an_override_interrupted_between_its_two_writes_is_repaired_at_open(tmp_path: Path) -> None:
    settings = sharded(tmp_path)
    rows = corpus(100)
    async with running(settings) as first:
        await upsert(first, [point(i, rows[i], "a.txt") for i in range(100)])
        dirs = [unit.dirname for unit in (await collection(first)).units]
    assert dirs == [SHARD_DIR, "shard-1", "shard-2"]
    # The first half of an override of point 3 (held by the first shard): written to the
    # write shard, the process died before deleting it from the sealed shard.
    encoder = SparseEncoder()
    sparse = encoder.document("copper lantern")
    shard = EdgeShard.load(str(settings.shard_root / KB / "shard-2"))
    payload = {"text": "copper lantern", "file_name": "a.txt", "chunk_index": 3, "metadata": {}}
    vectors: dict[str, list[float] | EdgeSparseVector | list[list[float]]] = {
        "dense": rows[50][0],
        "sparse": EdgeSparseVector(sparse.indices, sparse.values),
    }
    shard.update(UpdateOperation.upsert_points([Point(point_id(3), vectors, payload)]))
    shard.flush()
    shard.close()
    async with running(settings) as second:
        assert await points(second) == 100
        reply = await second.stub.Search(
            pb.SearchRequest(
                collection=KB, query_text="copper lantern", mode=pb.SEARCH_MODE_SPARSE, top_k=100
            )
        )
        assert [h.text for h in reply.hits if h.chunk_id == point_id(3)] == ["copper lantern"]
        assert sum(unit.terms.docs for unit in (await collection(second)).units) == 100


async def test_a_collection_from_before_sharding_keeps_one_bm25_across_its_shards(tmp_path: Path) -> None:
    """Its first shard weights terms with the engine's own IDF; later shards store plain
    weights; the query corrects the first shard's weights, so scores match a new collection."""
    rows = corpus(120)
    points_ = [point(i, rows[i], f"f{i % 3}.txt") for i in range(120)]
    async with running(make_settings("edge", tmp_path / "one")) as single:
        await upsert(single, points_)
        baseline = await answers(single)
    async with running(sharded(tmp_path / "old")) as old:
        assert isinstance(old.backend, EdgeBackend)
        create_on_disk(old.backend.root / KB, DIM, old.backend._options, meta_format=2)
        await upsert(old, points_)
        units = (await collection(old)).units
        assert [unit.engine_idf for unit in units] == [True, False, False, False]
        same(await answers(old), baseline)


async def test_a_shard_holding_most_of_the_best_candidates_is_asked_for_them_all(tmp_path: Path) -> None:
    """Shards are first asked for a share of the candidates; here the first shard holds 40
    of the 50 best of each kind, so only asking it again for all 50 gives the same hits and
    scores as one shard."""
    rng = np.random.default_rng(7)
    centre = rng.standard_normal(DIM)
    rows = []
    for i in range(200):
        near = i < 40  # the first shard's points: near the query, and sharing its words
        vector = centre + rng.standard_normal(DIM) * (0.05 if near else 1.0)
        words = ["lantern", "harbor", *rng.choice(WORDS, size=3)] if near else rng.choice(WORDS[:4], size=4)
        rows.append(((vector / np.linalg.norm(vector)).tolist(), " ".join(words)))
    query = pb.SearchRequest(
        collection=KB, vector=(centre / np.linalg.norm(centre)).tolist(), query_text="lantern harbor", top_k=8
    )

    async def hits(served: Running) -> Answer:
        await upsert(served, [point(i, rows[i], "a.txt") for i in range(200)])
        found = []
        for mode in MODES.values():
            for fusion in FUSIONS.values():
                query.mode, query.fusion = mode, fusion
                reply = await served.stub.Search(query)
                found.append([(h.chunk_id, h.file_name, h.score, h.dense_score, h.text) for h in reply.hits])
        return found

    async with running(make_settings("edge", tmp_path / "one")) as single:
        baseline = await hits(single)
    async with running(sharded(tmp_path / "many")) as many:
        same(await hits(many), baseline)
        assert len((await collection(many)).units) == 6


async def test_candidates_tied_at_the_cut_ask_each_shard_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies of one chunk tie on both scores in every shard. Each shard's share is full of
    them, but none can beat the cut, so no shard is asked again (before, every shard was
    asked twice), and every hit is one of the tied copies."""
    asks: list[int] = []

    def counted(requests: Any) -> Any:
        asks.append(len(requests))
        return QueryBatchRequest(requests)

    monkeypatch.setattr(edge_collection, "QueryBatchRequest", counted)
    row = corpus(1)[0]
    async with running(sharded(tmp_path)) as served:
        await upsert(served, [point(i, row, "a.txt") for i in range(200)])
        shards = len((await collection(served)).units)
        asks.clear()
        reply = await served.stub.Search(
            pb.SearchRequest(
                collection=KB, vector=row[0], query_text=row[1], mode=pb.SEARCH_MODE_HYBRID, top_k=8
            )
        )
    assert shards == 6 and asks == [2] * 5 + [1]  # the empty write shard has no words: dense only
    assert len(reply.hits) == 8 and len({hit.score for hit in reply.hits}) == 1


async def test_a_caller_that_goes_away_mid_seal_does_not_split_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upsert that fills the write shard seals it; cancelling that call while the new
    shard is being created must still leave the new shard attached, so the next seal works
    (before, the next seal collided with the new shard's directory)."""
    created = threading.Event()
    real = edge_shard.create_shard

    def slow_create(path: Path, config: Any) -> None:
        real(path, config)
        created.set()
        time.sleep(0.3)

    monkeypatch.setattr(edge_collection, "create_shard", slow_create)
    rows = corpus(130)
    async with running(sharded(tmp_path)) as served:
        await upsert(served, [point(i, rows[i], "a.txt") for i in range(20)])
        opened = await collection(served)
        batch = [PointRecord.from_pb(point(i, rows[i], "a.txt"), SparseEncoder()) for i in range(20, 40)]
        created.clear()  # set when the collection's first shard was created
        call = asyncio.create_task(opened.upsert(batch))
        await asyncio.to_thread(created.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert [unit.dirname for unit in opened.units] == [SHARD_DIR, "shard-1"]
        await upsert(served, [point(i, rows[i], "a.txt") for i in range(40, 130)])
        assert [unit.dirname for unit in opened.units] == [SHARD_DIR, "shard-1", "shard-2", "shard-3"]
        assert await points(served) == 130
