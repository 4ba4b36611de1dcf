"""Fixtures that start the real retrieve gRPC server in-process on a free port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.common.config import CommonSettings
from services.common.grpc_server import GrpcService
from services.retrieve.backends import create_backend
from services.retrieve.backends.base import RetrieveBackend
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec
from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc

# Every layout the congruence tests run against: the embedded engine, a Qdrant collection per
# knowledge base, and knowledge bases sharing one collection (both Qdrant ones in local mode).
LAYOUTS: dict[str, dict[str, Any]] = {
    "edge": {"backend": "edge"},
    "qdrant": {"backend": "qdrant", "qdrant_layout": "per_collection"},
    "qdrant-shared": {"backend": "qdrant", "qdrant_layout": "shared"},
}
BACKEND_NAMES = tuple(LAYOUTS)


def make_settings(layout: str, tmp_path: Path, **overrides: Any) -> RetrieveSettings:
    """Settings of one of :data:`LAYOUTS` (``edge``, ``qdrant``, ``qdrant-shared``)."""
    backend = LAYOUTS[layout]["backend"]
    values: dict[str, Any] = {
        **LAYOUTS[layout],
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 1.0,
        "common": CommonSettings(data_dir=tmp_path / "data", log_json=False),
        "edge_optimize_delay_s": 0,  # tests start index builds explicitly
        "qdrant_url": None,
        "qdrant_path": str(tmp_path / "qdrant") if backend == "qdrant" else None,
        "qdrant_retry_backoff_s": 0.01,
    }
    values.update(overrides)
    return RetrieveSettings(**values)


@dataclass
class Running:
    stub: retrieve_pb2_grpc.RetrieveServiceStub
    service: GrpcService
    backend: RetrieveBackend
    settings: RetrieveSettings


@asynccontextmanager
async def running(settings: RetrieveSettings) -> AsyncIterator[Running]:
    backend = create_backend(settings)
    service = GrpcService(build_spec(settings, backend), settings)
    try:
        await service.start()
    except BaseException:
        await service.stop()
        raise
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield Running(retrieve_pb2_grpc.RetrieveServiceStub(channel), service, backend, settings)
    finally:
        await channel.close()
        await service.stop()


@pytest.fixture(params=BACKEND_NAMES)
async def retrieve(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Running]:
    async with running(make_settings(request.param, tmp_path)) as served:
        yield served


def point_id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"zhiku-test/{n}"))


def make_point(
    n: int,
    vector: Sequence[float],
    file_name: str = "a.txt",
    text: str | None = None,
    metadata: dict[str, str] | None = None,
) -> retrieve_pb2.Point:
    return retrieve_pb2.Point(
        id=point_id(n),
        vector=list(vector),
        file_name=file_name,
        chunk_index=n,
        text=text if text is not None else f"chunk {n}",
        metadata=metadata or {},
    )


async def expect_error(call: Any, code: grpc.StatusCode, *fragments: str) -> str:
    """Await ``call``; assert it failed with ``code`` and a message holding every fragment."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    return details
