"""Shared helpers: a real embed server on a free port, dialled over real gRPC."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from services.common.grpc_server import GrpcService
from services.embed.config import EmbedSettings
from services.embed.server import build_spec
from zhiku.v1 import embed_pb2, embed_pb2_grpc


def make_settings(**overrides: Any) -> EmbedSettings:
    """Settings for an in-process server on loopback, port 0, no metrics port."""
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 0,
        **overrides,
    }
    return EmbedSettings(**values)


@contextlib.asynccontextmanager
async def running_embed(settings: EmbedSettings) -> AsyncIterator[embed_pb2_grpc.EmbedServiceStub]:
    service = GrpcService(build_spec(settings), settings)
    try:
        await service.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            yield embed_pb2_grpc.EmbedServiceStub(channel)
    finally:
        await service.stop()


async def embed(
    stub: embed_pb2_grpc.EmbedServiceStub,
    texts: list[str],
    kind: embed_pb2.EmbedKind = embed_pb2.EMBED_KIND_PASSAGE,
) -> np.ndarray:
    response = await stub.Embed(embed_pb2.EmbedRequest(texts=texts, kind=kind), timeout=60)
    assert len(response.vectors) == len(texts)
    matrix = np.array([list(vector.values) for vector in response.vectors], dtype=np.float32)
    assert matrix.shape == (len(texts), response.dimension)
    return matrix
