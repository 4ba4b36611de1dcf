"""Fixtures: the real generate server in-process on port 0, dialled over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import pytest

from services.common.grpc_server import GrpcService
from services.generate.backends import Backend
from services.generate.config import GenerateSettings
from services.generate.server import build_spec
from zhiku.v1 import common_pb2, generate_pb2, generate_pb2_grpc

Serve = Callable[..., Awaitable[generate_pb2_grpc.GenerateServiceStub]]


def make_settings(**overrides: Any) -> GenerateSettings:
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 1.0,
    }
    values.update(overrides)
    return GenerateSettings(**values)


def ask(
    question: str,
    passages: Iterable[tuple[str, str]] = (),
    *,
    grounded: bool = False,
    history: Iterable[tuple[str, str]] = (),
    **fields: Any,
) -> generate_pb2.GenerateRequest:
    """A request: ``passages`` are (file_name, text) pairs, ``history`` (role, content) pairs."""
    passages = list(passages)
    messages = [generate_pb2.ChatMessage(role=r, content=c) for r, c in history]
    messages.append(generate_pb2.ChatMessage(role="user", content=question))
    return generate_pb2.GenerateRequest(
        messages=messages,
        passages=[
            common_pb2.Passage(chunk_id=f"c{i}", file_name=name, text=text, score=0.9 - i / 10)
            for i, (name, text) in enumerate(passages)
        ],
        grounded=grounded or bool(passages),
        **fields,
    )


async def collect(
    call: AsyncIterator[generate_pb2.GenerateResponse],
) -> tuple[list[str], generate_pb2.GenerateResponse]:
    """All deltas of a stream and its final message (asserting there is exactly one)."""
    deltas: list[str] = []
    finals: list[generate_pb2.GenerateResponse] = []
    async for message in call:
        if message.finish_reason:
            finals.append(message)
        elif message.delta:
            if finals:
                raise AssertionError("delta after the final message")
            deltas.append(message.delta)
    if len(finals) != 1:
        raise AssertionError(f"expected one final message, got {len(finals)}")
    return deltas, finals[0]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[GrpcService] = []
    channels: list[grpc.aio.Channel] = []

    async def _serve(
        settings: GenerateSettings, backend: Backend | None = None
    ) -> generate_pb2_grpc.GenerateServiceStub:
        service = GrpcService(build_spec(settings, backend), settings)
        await service.start()
        started.append(service)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        channels.append(channel)
        return generate_pb2_grpc.GenerateServiceStub(channel)

    yield _serve
    for channel in channels:
        await channel.close()
    for service in started:
        await service.stop()
