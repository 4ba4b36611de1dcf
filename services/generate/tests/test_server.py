"""The servicer over real gRPC: bad requests get precise errors and the service stays up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import GrpcService
from services.common.service_names import GENERATE_SERVICE
from services.generate.server import build_spec
from services.generate.tests.conftest import Serve, ask, collect, make_settings
from zhiku.v1 import generate_pb2


async def expect_error(
    call: AsyncIterator[generate_pb2.GenerateResponse], code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call)
    assert caught.value.code() == code, caught.value.details()
    assert fragment in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (generate_pb2.GenerateRequest(), "messages is empty"),
        (
            generate_pb2.GenerateRequest(
                messages=[
                    generate_pb2.ChatMessage(role="user", content="hi"),
                    generate_pb2.ChatMessage(role="assistant", content="hello"),
                ]
            ),
            "the last message must be the user's question (role 'user'), got role 'assistant'",
        ),
        (
            generate_pb2.GenerateRequest(messages=[generate_pb2.ChatMessage(role="robot", content="hi")]),
            "messages[0].role is 'robot'",
        ),
        (
            generate_pb2.GenerateRequest(messages=[generate_pb2.ChatMessage(role="user", content="  ")]),
            "question (the last message) is empty",
        ),
        (ask("hi", temperature=3.0), "temperature must be within [0, 2], got 3"),
        (ask("hi", top_p=0.0), "top_p must be within (0, 1]"),
        (ask("hi", max_tokens=0), "max_tokens must be at least 1, got 0"),
        (ask("hi", stop=[""]), "stop sequences must not be empty"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    serve: Serve, request_: generate_pb2.GenerateRequest, fragment: str
) -> None:
    stub = await serve(make_settings(backend="extractive"))
    await expect_error(stub.Generate(request_), grpc.StatusCode.INVALID_ARGUMENT, fragment)
    # The service is still up and answers a good request.
    _, final = await collect(stub.Generate(ask("Tell me a joke")))
    assert final.finish_reason == "stop"


async def test_unknown_model_is_not_found(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    await expect_error(
        stub.Generate(ask("hi", model="gpt-9")),
        grpc.StatusCode.NOT_FOUND,
        "model 'gpt-9' is not served here; available: extractive",
    )
    _, final = await collect(stub.Generate(ask("hi", model="extractive")))
    assert final.finish_reason == "stop"


async def test_default_alias_reaches_the_served_model(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    _, final = await collect(stub.Generate(ask("hi", model="default")))
    assert final.finish_reason == "stop"


async def test_list_models_reports_backend_and_served_name(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive", served_model_name="zhiku-extract"))
    response = await stub.ListModels(generate_pb2.ListModelsRequest())
    assert [(m.id, m.backend) for m in response.models] == [("zhiku-extract", "extractive")]
    assert response.models[0].context_window > 0


async def test_health_is_serving_after_start() -> None:
    settings = make_settings(backend="extractive")
    service = GrpcService(build_spec(settings), settings)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=GENERATE_SERVICE))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await service.stop()


async def test_history_and_system_messages_are_accepted(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    request = ask(
        "Where do orders ship from?",
        [("shipping.md", "Orders ship from our warehouse in Berlin.")],
        history=[("system", "Be brief."), ("user", "hello"), ("assistant", "Hi! How can I help?")],
    )
    deltas, _ = await collect(stub.Generate(request))
    assert "Berlin" in "".join(deltas)
