"""The bounded queue in front of every backend, over real gRPC against the OpenAI-protocol fake.

Calls go through a channel built like the gateway's (``aio_channel``: its service config retries
UNAVAILABLE up to four times), so the refusal counts also prove that a refusal is not retried
behind the caller's back. The fake holds its streams on an event, so calls stay in flight for as
long as a test needs, without racing a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.grpc_client import aio_channel
from services.common.grpc_server import GrpcService
from services.common.service_names import GENERATE_SERVICE
from services.generate.admission import REJECT_REASONS
from services.generate.backends.llamacpp import LlamaCppBackend
from services.generate.config import GenerateSettings
from services.generate.generator import Generator
from services.generate.prompting import PromptTemplates
from services.generate.server import build_spec
from services.generate.tests.conftest import ask, collect, make_settings
from services.generate.tests.test_openai_backend import openai_settings
from testing.fake_openai import FakeOpenAI, running, words
from zhiku.v1 import generate_pb2, generate_pb2_grpc

Connect = Callable[[GenerateSettings], Awaitable[generate_pb2_grpc.GenerateServiceStub]]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": "openai", **labels}) or 0.0


def rejections() -> dict[str, float]:
    return {r: sample("zhiku_generate_requests_rejected_total", reason=r) for r in REJECT_REASONS}


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Wait for a state the test set up (not a timing assertion: the limit only ends a hang)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never reached: {what}")
        await asyncio.sleep(0.01)


async def refusal(call: AsyncIterator[generate_pb2.GenerateResponse]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await collect(call)
    error = raised.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error
    return error


def trailing(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {key: str(value) for key, value in error.trailing_metadata() or ()}


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Starts the service; its stub dials through a channel with the stack's retry policy."""
    services: list[GrpcService] = []
    channels: list[grpc.aio.Channel] = []

    async def _connect(settings: GenerateSettings) -> generate_pb2_grpc.GenerateServiceStub:
        service = GrpcService(build_spec(settings), settings)
        await service.start()
        services.append(service)
        channel = aio_channel(f"127.0.0.1:{service.port}", [GENERATE_SERVICE])
        channels.append(channel)
        return generate_pb2_grpc.GenerateServiceStub(channel)

    yield _connect
    for channel in channels:
        await channel.close()
    for service in services:
        await service.stop()


async def test_a_full_queue_refuses_at_once_and_a_queued_call_waits_the_bound(connect: Connect) -> None:
    before, admitted_before = rejections(), sample("zhiku_generate_queue_wait_seconds_count")
    hold = asyncio.Event()
    async with running(FakeOpenAI(words(8), hold=hold)) as fake:
        settings = openai_settings(fake.base_url, max_concurrency=2, max_waiting=3, max_queue_wait_s=3.0)
        stub = await connect(settings)
        running_calls = [asyncio.create_task(collect(stub.Generate(ask(f"run {i}")))) for i in range(2)]
        await until(lambda: fake.active == 2, "both slots streaming")
        queued = [asyncio.create_task(refusal(stub.Generate(ask(f"queued {i}")))) for i in range(3)]
        await until(lambda: sample("zhiku_generate_requests_waiting") == 3, "three calls queued")

        refused = [await refusal(stub.Generate(ask(f"over {i}"))) for i in range(3)]
        # Refused at once: the calls queued before them are still inside their 3 s wait.
        assert not any(task.done() for task in queued)
        for error in refused:
            assert "3 calls queued already" in (error.details() or "")
            # No generation has finished yet, so no estimate: retry after the bound.
            assert trailing(error)["retry-after"] == "3"
            assert trailing(error)["grpc-retry-pushback-ms"] == "-1"

        for error in await asyncio.gather(*queued):
            assert "no slot within the 3 s bound" in (error.details() or "")
            assert int(trailing(error)["retry-after"]) >= 1
        assert sample("zhiku_generate_requests_waiting") == 0
        assert fake.active == 2 and len(fake.calls) == 2  # refused calls never reached the upstream

        hold.set()
        answers = await asyncio.gather(*running_calls)
    for deltas, final in answers:
        assert "".join(deltas) == "".join(words(8)) and final.finish_reason == "stop"
    after = rejections()
    # Exactly one refusal per call: the channel's retry policy did not send any of them again.
    assert {r: after[r] - before[r] for r in REJECT_REASONS} == {
        "queue_full": 3,
        "wait_estimate": 0,
        "wait_timeout": 3,
    }
    assert sample("zhiku_generate_queue_wait_seconds_count") - admitted_before == 2
    assert sample("zhiku_generate_requests_running") == 0


async def test_an_expected_wait_over_the_bound_is_refused_at_once(connect: Connect) -> None:
    before = rejections()
    hold = asyncio.Event()
    hold.set()
    # Ten tokens paced 30 ms apart: a slot is held at least 0.27 s per answer.
    async with running(FakeOpenAI(words(10), delay_s=0.03, hold=hold)) as fake:
        stub = await connect(openai_settings(fake.base_url, max_concurrency=1, max_queue_wait_s=0.2))
        _, final = await collect(stub.Generate(ask("first")))  # a slot was free: no wait at all
        assert final.finish_reason == "stop"
        hold.clear()
        busy = asyncio.create_task(collect(stub.Generate(ask("busy"))))
        await until(lambda: fake.active == 1, "the slot streaming")

        error = await refusal(stub.Generate(ask("one too many")))
        assert "over the 0.2 s bound" in (error.details() or "")
        # The expected wait is one answer's time (>= 0.27 s), rounded up to whole seconds.
        assert trailing(error)["retry-after"] == "1"
        assert sample("zhiku_generate_requests_waiting") == 0  # refused without queueing
        hold.set()
        _, final = await busy
    assert final.finish_reason == "stop"
    after = rejections()
    assert {r: after[r] - before[r] for r in REJECT_REASONS} == {
        "queue_full": 0,
        "wait_estimate": 1,
        "wait_timeout": 0,
    }


def test_llamacpp_is_never_given_more_than_one_generation_at_once() -> None:
    """Admitting more would queue them inside the backend's lock, where no bound applies."""
    settings = make_settings(backend="llamacpp", max_concurrency=8)
    generator = Generator(settings, LlamaCppBackend(settings), PromptTemplates.load(None))
    assert generator.admission.slots == 1
