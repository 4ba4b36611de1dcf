"""Document access inside the vector query, through the real gRPC server, on every backend:
hidden chunks are never returned (every mode, with file and metadata filters), top_k still
fills with visible ones when hidden ones rank higher, points without an acl stay open, and
SetFileAcl changes a file's access in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from qdrant_edge import EdgeShard, UpdateOperation

from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_collection import create_on_disk
from services.retrieve.backends.edge_shard import SHARD_DIR, ShardOptions, edge_config
from services.retrieve.domain import ACL
from services.retrieve.tests.conftest import Running, expect_error, make_point, make_settings, running
from zhiku.v1 import common_pb2
from zhiku.v1 import retrieve_pb2 as pb

KB = "acl"
DIM = 4
E0 = [1.0, 0.0, 0.0, 0.0]
# (n, vector, file, text, acl): the secret file ranks first for E0 and for "budget".
POINTS: list[tuple[int, list[float], str, str, list[str]]] = [
    (0, E0, "secret.txt", "budget budget plan for the merger", ["user:u_alice", "group:finance"]),
    (
        1,
        [0.99, 0.01, 0.0, 0.0],
        "secret.txt",
        "budget numbers of the merger",
        ["user:u_alice", "group:finance"],
    ),
    (2, [0.9, 0.1, 0.0, 0.0], "public.txt", "budget of the picnic", ["*"]),
    (3, [0.8, 0.2, 0.0, 0.0], "legacy.txt", "budget notes from before access lists", []),
    (4, [0.7, 0.3, 0.0, 0.0], "team.txt", "budget of the team offsite", ["group:sales"]),
]
MODES = {"hybrid": pb.SEARCH_MODE_HYBRID, "dense": pb.SEARCH_MODE_DENSE, "sparse": pb.SEARCH_MODE_SPARSE}


async def seed(retrieve: Running) -> None:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=DIM))
    points = []
    for n, vector, file_name, text, acl in POINTS:
        point = make_point(n, vector, file_name, text=text)
        point.acl.extend(acl)
        points.append(point)
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))


async def files_found(retrieve: Running, mode: str = "dense", **fields: Any) -> list[str]:
    fields.setdefault("top_k", 10)
    request = pb.SearchRequest(collection=KB, vector=E0, query_text="budget", mode=MODES[mode], **fields)
    hits: list[common_pb2.Passage] = list((await retrieve.stub.Search(request)).hits)
    return [hit.file_name for hit in hits]


@pytest.mark.parametrize("mode", list(MODES))
async def test_readers_see_only_what_their_tokens_open(retrieve: Running, mode: str) -> None:
    await seed(retrieve)
    everything = await files_found(retrieve, mode)
    assert set(everything) == {"secret.txt", "public.txt", "legacy.txt", "team.txt"}

    outsider = await files_found(retrieve, mode, enforce_acl=True, reader_acl=["user:u_bob"])
    assert set(outsider) == {"public.txt", "legacy.txt"}
    member = await files_found(retrieve, mode, enforce_acl=True, reader_acl=["user:u_bob", "group:finance"])
    assert set(member) == {"secret.txt", "public.txt", "legacy.txt"}
    alice = await files_found(retrieve, mode, enforce_acl=True, reader_acl=["user:u_alice"])
    assert "secret.txt" in alice and "team.txt" not in alice
    # "*" is always part of the reader: an empty reader still sees open chunks.
    assert set(await files_found(retrieve, mode, enforce_acl=True)) == {"public.txt", "legacy.txt"}
    # Tokens without enforce_acl change nothing (unrestricted readers).
    assert set(await files_found(retrieve, mode, reader_acl=["user:u_bob"])) == set(everything)


@pytest.mark.parametrize("mode", list(MODES))
async def test_top_k_fills_with_visible_chunks_when_hidden_ones_rank_higher(
    retrieve: Running, mode: str
) -> None:
    await seed(retrieve)
    assert (await files_found(retrieve, mode, top_k=2))[0] == "secret.txt"
    found = await files_found(retrieve, mode, top_k=2, enforce_acl=True, reader_acl=["user:u_bob"])
    assert sorted(found) == ["legacy.txt", "public.txt"]


async def test_file_and_metadata_filters_combine_with_access(retrieve: Running) -> None:
    await seed(retrieve)
    hidden = await files_found(
        retrieve, file_names=["secret.txt"], enforce_acl=True, reader_acl=["group:sales"]
    )
    assert hidden == []
    assert await files_found(
        retrieve, file_names=["secret.txt", "team.txt"], enforce_acl=True, reader_acl=["group:sales"]
    ) == ["team.txt"]


async def test_set_file_acl_changes_access_in_place(retrieve: Running) -> None:
    await seed(retrieve)
    bob: dict[str, Any] = {"enforce_acl": True, "reader_acl": ["user:u_bob"]}
    reply = await retrieve.stub.SetFileAcl(
        pb.SetFileAclRequest(collection=KB, file_name="secret.txt", acl=["user:u_alice", "user:u_bob"])
    )
    assert reply.updated == 2
    assert "secret.txt" in await files_found(retrieve, **bob)
    # Closing a legacy (acl-less) file and opening the team file.
    await retrieve.stub.SetFileAcl(
        pb.SetFileAclRequest(collection=KB, file_name="legacy.txt", acl=["user:u_alice"])
    )
    await retrieve.stub.SetFileAcl(pb.SetFileAclRequest(collection=KB, file_name="team.txt", acl=["*"]))
    assert set(await files_found(retrieve, **bob)) == {"secret.txt", "public.txt", "team.txt"}
    # Text, vectors and the rest of the payload are untouched.
    hits = (await retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=E0, top_k=1))).hits
    assert hits[0].text == POINTS[0][3] and hits[0].score == pytest.approx(1.0)
    missing = await retrieve.stub.SetFileAcl(
        pb.SetFileAclRequest(collection=KB, file_name="nope.txt", acl=["*"])
    )
    assert missing.updated == 0
    # Stats still count every point: counts for readers come from searches.
    assert (await retrieve.stub.Stats(pb.StatsRequest(collection=KB))).points == len(POINTS)


@pytest.mark.parametrize(
    ("acl", "fragment"),
    [([], "acl is empty"), (["user:"], "'user:'"), (["admin"], "'admin'"), (["group:"], "group")],
)
async def test_bad_acls_are_invalid(retrieve: Running, acl: list[str], fragment: str) -> None:
    await seed(retrieve)
    await expect_error(
        retrieve.stub.SetFileAcl(pb.SetFileAclRequest(collection=KB, file_name="a.txt", acl=acl)),
        grpc.StatusCode.INVALID_ARGUMENT,
        fragment,
    )
    point = make_point(9, E0)
    point.acl.append("everyone")
    await expect_error(
        retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=[point])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'everyone'",
    )
    await expect_error(
        retrieve.stub.Search(pb.SearchRequest(collection=KB, vector=E0, enforce_acl=True, reader_acl=["x"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reader_acl",
    )


async def test_set_file_acl_on_unknown_collection_is_not_found(retrieve: Running) -> None:
    await expect_error(
        retrieve.stub.SetFileAcl(pb.SetFileAclRequest(collection="nope", file_name="a.txt", acl=["*"])),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_an_edge_shard_made_before_access_lists_gets_the_acl_index(tmp_path: Path) -> None:
    settings = make_settings("edge", tmp_path)
    options = ShardOptions.from_settings(settings)
    root = settings.shard_root / KB
    root.parent.mkdir(parents=True, exist_ok=True)
    create_on_disk(root, DIM, options)
    old = EdgeShard.load(str(root / SHARD_DIR), edge_config(DIM, options))
    old.update(UpdateOperation.delete_field_index(ACL))  # as a shard of an earlier release
    old.flush()
    assert ACL not in old.info().payload_schema
    old.close()
    async with running(settings) as served:
        await served.stub.Upsert(pb.UpsertRequest(collection=KB, points=[make_point(0, E0, "old.txt")]))
        assert await files_found(served, enforce_acl=True, reader_acl=["user:u_bob"]) == ["old.txt"]
        assert isinstance(served.backend, EdgeBackend)
        opened = await served.backend.collection(KB)
        assert ACL in opened.units[0].shard.info().payload_schema
