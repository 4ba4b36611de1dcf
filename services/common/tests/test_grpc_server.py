"""The shared bootstrap over real gRPC: health, reflection, error mapping, request ids, deadlines."""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.config import CommonSettings, ServiceSettings
from services.common.errors import DependencyUnavailable, NotFound, error_from_rpc
from services.common.grpc_client import aio_channel
from services.common.grpc_server import GrpcService, ServiceSpec
from services.common.logging import REQUEST_ID_HEADER, current_request_id, request_id_var
from services.common.metrics import GRPC_REQUESTS
from services.common.service_names import EMBED_SERVICE, GENERATE_SERVICE
from zhiku.v1 import embed_pb2, embed_pb2_grpc, generate_pb2, generate_pb2_grpc


class EchoRequestIdGenerate(generate_pb2_grpc.GenerateServiceServicer):
    """Streams back the request id it saw, to check ids travel on streaming calls too."""

    async def Generate(self, request, context):
        yield generate_pb2.GenerateResponse(delta=current_request_id())
        yield generate_pb2.GenerateResponse(finish_reason="stop")


class ProbeEmbed(embed_pb2_grpc.EmbedServiceServicer):
    """A servicer whose behaviour is chosen by the request text, to drive the interceptor."""

    def __init__(self) -> None:
        self.seen_request_ids: list[str] = []

    async def Embed(self, request, context):
        self.seen_request_ids.append(current_request_id())
        match request.texts[0]:
            case "missing":
                raise NotFound("knowledge base 'nope' does not exist")
            case "crash":
                raise RuntimeError("boom")
            case "slow":
                await asyncio.sleep(5)
        return embed_pb2.EmbedResponse(model="probe", dimension=1)

    async def Info(self, request, context):
        return embed_pb2.EmbedInfo(backend="probe", model="probe", dimension=1)


@pytest.fixture
async def running():
    servicer = ProbeEmbed()
    ready = asyncio.Event()

    async def startup() -> None:
        ready.set()

    def register(server) -> None:
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(servicer, server)
        generate_pb2_grpc.add_GenerateServiceServicer_to_server(EchoRequestIdGenerate(), server)

    spec = ServiceSpec(
        name="probe", service_names=[EMBED_SERVICE, GENERATE_SERVICE], register=register, startup=startup
    )
    settings = ServiceSettings(
        grpc_host="127.0.0.1", grpc_port=0, common=CommonSettings(grpc_default_timeout_s=0.5)
    )
    service = GrpcService(spec, settings)
    await service.start()
    assert ready.is_set()
    channel = aio_channel(f"127.0.0.1:{service.port}", [EMBED_SERVICE, GENERATE_SERVICE])
    yield servicer, channel
    await channel.close()
    await service.stop()


async def test_health_reports_serving_for_the_service(running):
    _, channel = running
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", EMBED_SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(running):
    _, channel = running
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(requests()):
        names = {service.name for service in reply.list_services_response.service}
        assert EMBED_SERVICE in names
        assert "grpc.health.v1.Health" in names
        break


async def test_domain_errors_map_to_status_codes(running):
    _, channel = running
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embed_pb2.EmbedRequest(texts=["missing"]), timeout=2)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "'nope' does not exist" in (caught.value.details() or "")
    assert isinstance(error_from_rpc(caught.value), NotFound)


async def test_unexpected_errors_are_internal_and_the_server_stays_up(running, caplog):
    _, channel = running
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embed_pb2.EmbedRequest(texts=["crash"]), timeout=2)
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "boom" in (caught.value.details() or "")
    reply = await stub.Embed(embed_pb2.EmbedRequest(texts=["fine"]), timeout=2)
    assert reply.model == "probe"


async def test_server_applies_its_default_deadline_when_the_caller_sent_none(running):
    _, channel = running
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embed_pb2.EmbedRequest(texts=["slow"]))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(error_from_rpc(caught.value), DependencyUnavailable)


async def test_request_id_travels_in_metadata(running):
    servicer, channel = running
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    token = request_id_var.set("req-from-gateway")
    try:
        await stub.Embed(embed_pb2.EmbedRequest(texts=["fine"]), timeout=2)
    finally:
        request_id_var.reset(token)
    await stub.Embed(
        embed_pb2.EmbedRequest(texts=["fine"]), metadata=((REQUEST_ID_HEADER, "explicit"),), timeout=2
    )
    assert servicer.seen_request_ids[0] == "req-from-gateway"
    assert servicer.seen_request_ids[1] == "explicit"


async def test_request_id_travels_on_streaming_calls(running):
    _, channel = running
    stub = generate_pb2_grpc.GenerateServiceStub(channel)
    token = request_id_var.set("stream-rid")
    try:
        replies = [r async for r in stub.Generate(generate_pb2.GenerateRequest(), timeout=2)]
    finally:
        request_id_var.reset(token)
    assert replies[0].delta == "stream-rid"
    assert replies[-1].finish_reason == "stop"


async def test_calls_are_counted_by_method_and_code(running):
    _, channel = running
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    counter = GRPC_REQUESTS.labels("probe", "Embed", "NOT_FOUND")
    before = counter._value.get()
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Embed(embed_pb2.EmbedRequest(texts=["missing"]), timeout=2)
    assert counter._value.get() == before + 1


def test_json_logs_carry_service_and_request_id(capsys):
    import json

    from services.common.logging import configure_logging

    configure_logging("probe", "INFO", json_logs=True)
    token = request_id_var.set("rid-42")
    try:
        logging.getLogger("zhiku.test").info("indexed %d chunks", 7, extra={"fields": {"kb": "知识"}})
    finally:
        request_id_var.reset(token)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["service"] == "probe"
    assert entry["request_id"] == "rid-42"
    assert entry["msg"] == "indexed 7 chunks"
    assert entry["kb"] == "知识"


def test_logs_follow_stderr_when_it_is_replaced_and_the_old_one_closed(monkeypatch):
    """A server thread that outlives the stream logging was configured with (a test runner's
    closed capture file) still logs, to the current stderr, with no 'Logging error'."""
    import io

    from services.common.logging import configure_logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("probe", "INFO", json_logs=False)
    logging.getLogger("zhiku.test").info("to the first")
    first_text = first.getvalue()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("zhiku.test").info("to the second")
    assert "to the first" in first_text
    assert "to the second" in second.getvalue() and "Logging error" not in second.getvalue()
