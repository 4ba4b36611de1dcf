"""Qdrant backend behaviour the local-mode congruence tests cannot show: a server that is down."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.retrieve.tests.conftest import expect_error, make_settings, running
from zhiku.v1 import retrieve_pb2 as pb


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("prefer_grpc", [False, True], ids=["rest", "grpc"])
async def test_unreachable_server_is_unavailable_and_service_stays_up(
    tmp_path: Path, prefer_grpc: bool
) -> None:
    port = closed_port()
    settings = make_settings(
        "qdrant",
        tmp_path,
        qdrant_path=None,
        qdrant_url=f"http://127.0.0.1:{port}",
        qdrant_grpc_port=port,
        qdrant_prefer_grpc=prefer_grpc,
        qdrant_timeout_s=2,
    )
    async with running(settings) as served:
        calls = [
            served.stub.EnsureCollection(pb.EnsureCollectionRequest(collection="kb", dimension=4)),
            served.stub.Search(pb.SearchRequest(collection="kb", vector=[1.0, 0, 0, 0])),
            served.stub.Stats(pb.StatsRequest(collection="kb")),
        ]
        for call in calls:
            await expect_error(call, grpc.StatusCode.UNAVAILABLE, "qdrant")
        # Validation still answers without the store, and the process keeps serving.
        await expect_error(
            served.stub.Stats(pb.StatsRequest(collection="../kb")), grpc.StatusCode.INVALID_ARGUMENT
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.service.port}")
        try:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        finally:
            await channel.close()
        assert health.status == health_pb2.HealthCheckResponse.SERVING
