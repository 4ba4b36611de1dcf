"""DeleteByFile with ``keep_metadata`` / ``only_metadata``: how ingest swaps a file's points
generation by generation (new points first, then the old ones removed), on every backend."""

from __future__ import annotations

import grpc

from services.retrieve.tests.conftest import Running, expect_error, make_point
from zhiku.v1 import retrieve_pb2 as pb

KB = "generations"
DIM = 4


async def _count(retrieve: Running) -> int:
    return (await retrieve.stub.Stats(pb.StatsRequest(collection=KB))).points


async def test_delete_keeps_or_targets_one_generation(retrieve: Running) -> None:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    points = [
        make_point(n, [1.0, float(n), 0.0, 0.0], "a.txt", metadata={"generation": "old"}) for n in range(3)
    ]
    points += [
        make_point(n, [0.0, 1.0, float(n), 0.0], "a.txt", metadata={"generation": "new"}) for n in range(3, 7)
    ]
    points += [make_point(9, [0.0, 0.0, 1.0, 0.0], "b.txt", metadata={"generation": "old"})]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))
    assert await _count(retrieve) == 8
    # A failed job removes only its own partial generation.
    only = pb.DeleteByFileRequest(collection=KB, file_name="a.txt", only_metadata={"generation": "new"})
    assert (await retrieve.stub.DeleteByFile(only)).deleted == 4
    assert await _count(retrieve) == 4
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points[3:7]))
    # A finished job drops every other generation of its file, and nothing of other files.
    keep = pb.DeleteByFileRequest(collection=KB, file_name="a.txt", keep_metadata={"generation": "new"})
    assert (await retrieve.stub.DeleteByFile(keep)).deleted == 3
    assert await _count(retrieve) == 5
    assert (await retrieve.stub.DeleteByFile(keep)).deleted == 0
    await expect_error(
        retrieve.stub.DeleteByFile(
            pb.DeleteByFileRequest(collection=KB, file_name="a.txt", keep_metadata={"": "x"})
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty key",
    )
