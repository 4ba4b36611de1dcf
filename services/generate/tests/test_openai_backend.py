"""The openai backend over real gRPC against a fake OpenAI-protocol server (HTTP + SSE)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import REGISTRY

from services.generate.backends.openai_compat import request_kwargs, sse_data
from services.generate.domain import GenerationJob, Prompt, Sampling, Turn
from services.generate.tests.conftest import Serve, ask, collect, make_settings
from testing.fake_openai import GATHER_TIMEOUT_S, FakeOpenAI, running

TOKENS = ["Files ", "are ", "kept ", "in ", "the ", "blob ", "store ", "[1]."]
PASSAGES = [("guide.md", "Zhiku stores files in a blob store.")]


def openai_settings(base_url: str, **overrides: object):
    values: dict[str, object] = {
        "backend": "openai",
        "openai_base_url": base_url,
        "openai_api_key": "test-key",
        "openai_model": "fake-model",
        "openai_max_retries": 0,
        "openai_timeout_s": 10.0,
    }
    values.update(overrides)
    return make_settings(**values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_streams_deltas_in_order_with_upstream_usage(serve: Serve) -> None:
    async with running(FakeOpenAI(TOKENS, prompt_tokens=77)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        deltas, final = await collect(stub.Generate(ask("Where are files stored?", PASSAGES, max_tokens=100)))
    assert "".join(deltas) == "".join(TOKENS)
    assert final.finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (77, len(TOKENS))
    (call,) = fake.calls
    assert call.headers["authorization"] == "Bearer test-key"
    body = call.body
    assert body["model"] == "fake-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 100
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[1] (source: guide.md)" in body["messages"][-1]["content"]
    assert call.completed and not call.disconnected


async def test_usage_is_estimated_when_upstream_sends_none(serve: Serve) -> None:
    async with running(FakeOpenAI(TOKENS, sends_usage=False)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        deltas, final = await collect(stub.Generate(ask("Where are files stored?", PASSAGES)))
    assert "".join(deltas) == "".join(TOKENS)
    assert final.finish_reason == "stop"
    assert final.usage.prompt_tokens > 10  # system + instructions + passage + question
    assert final.usage.completion_tokens > 0


async def test_max_tokens_gives_length(serve: Serve) -> None:
    async with running(FakeOpenAI(TOKENS)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        deltas, final = await collect(stub.Generate(ask("Where are files stored?", PASSAGES, max_tokens=3)))
    assert "".join(deltas) == "".join(TOKENS[:3])
    assert final.finish_reason == "length"
    assert final.usage.completion_tokens == 3


async def test_cancel_mid_stream_closes_the_upstream_request(serve: Serve) -> None:
    tokens = [f"w{i} " for i in range(200)]
    async with running(FakeOpenAI(tokens, delay_s=0.02)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        call = stub.Generate(ask("Tell me everything", max_tokens=500))
        received = []
        async for message in call:
            received.append(message.delta)
            if len(received) == 3:
                break
        call.cancel()
        (upstream,) = fake.calls
        await asyncio.wait_for(upstream.ended.wait(), timeout=30)  # hang guard, not a timing check
        assert upstream.disconnected
        assert not upstream.completed
        assert upstream.tokens_sent < len(tokens)
        # The service is still fine for the next caller.
        deltas, final = await collect(stub.Generate(ask("again", max_tokens=2)))
        assert "".join(deltas) == "".join(tokens[:2]) and final.finish_reason == "length"


async def test_upstream_down_is_unavailable(serve: Serve) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    stub = await serve(openai_settings(base_url))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub.Generate(ask("hello")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"OpenAI-compatible upstream {base_url} is unreachable" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (503, grpc.StatusCode.UNAVAILABLE),
        (400, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_upstream_errors_map_to_status_codes(serve: Serve, status: int, code: grpc.StatusCode) -> None:
    async with running(FakeOpenAI(TOKENS, error_status=status)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(ask("hello")))
    assert caught.value.code() == code
    assert f"answered {status}" in (caught.value.details() or "")


async def test_wrong_api_key_is_failed_precondition(serve: Serve) -> None:
    async with running(FakeOpenAI(TOKENS, api_key="right-key")) as fake:
        stub = await serve(openai_settings(fake.base_url, openai_api_key="wrong-key"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(ask("hello")))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "answered 401" in (caught.value.details() or "")


def test_request_kwargs_carry_sampling_and_stop() -> None:
    prompt = Prompt(
        kind="chat",
        language="en",
        messages=(Turn("system", "s"), Turn("user", "q")),
        question="q",
        passages=(),
        prompt_tokens=5,
        nothing_found_reply="",
        no_model_reply="",
    )
    job = GenerationJob("rid", prompt, Sampling(temperature=0.1, top_p=0.5, max_tokens=9, stop=("END",)))
    kwargs = request_kwargs(job, "m")
    assert kwargs["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"], kwargs["stop"]) == (
        0.1,
        0.5,
        9,
        ["END"],
    )
    job.sampling = Sampling(temperature=0.1, top_p=0.5, max_tokens=9)
    assert "stop" not in request_kwargs(job, "m")


async def test_retries_before_the_first_token(serve: Serve) -> None:
    """A failed start (503) is retried by the SDK; the second attempt streams normally."""
    async with running(FakeOpenAI(TOKENS, fail_first=1)) as fake:
        stub = await serve(openai_settings(fake.base_url, openai_max_retries=1))
        deltas, final = await collect(stub.Generate(ask("Where are files stored?", PASSAGES)))
    assert "".join(deltas) == "".join(TOKENS) and final.finish_reason == "stop"
    assert len(fake.calls) == 2
    assert fake.calls[1].completed


async def test_no_retry_when_retries_are_off(serve: Serve) -> None:
    async with running(FakeOpenAI(TOKENS, fail_first=1)) as fake:
        stub = await serve(openai_settings(fake.base_url, openai_max_retries=0))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(ask("hello")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(fake.calls) == 1


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": "openai", **labels}) or 0.0


async def test_metrics_time_to_first_token_inter_token_and_tokens(serve: Serve) -> None:
    before = {
        "ttft": sample("zhiku_generate_ttft_seconds_count"),
        "itl": sample("zhiku_generate_inter_token_seconds_count"),
        "itl_sum": sample("zhiku_generate_inter_token_seconds_sum"),
        "in": sample("zhiku_generate_tokens_total", direction="in"),
        "out": sample("zhiku_generate_tokens_total", direction="out"),
    }
    async with running(FakeOpenAI(TOKENS, prompt_tokens=77, delay_s=0.02)) as fake:
        stub = await serve(openai_settings(fake.base_url))
        await collect(stub.Generate(ask("Where are files stored?", PASSAGES)))
    assert sample("zhiku_generate_ttft_seconds_count") - before["ttft"] == 1
    assert sample("zhiku_generate_inter_token_seconds_count") - before["itl"] == len(TOKENS) - 1
    # The fake paces tokens 20 ms apart; the mean gap seen by the service is about that.
    mean_gap = (sample("zhiku_generate_inter_token_seconds_sum") - before["itl_sum"]) / (len(TOKENS) - 1)
    assert 0.01 < mean_gap < 0.2
    assert sample("zhiku_generate_tokens_total", direction="in") - before["in"] == 77
    assert sample("zhiku_generate_tokens_total", direction="out") - before["out"] == len(TOKENS)
    assert sample("zhiku_generate_requests_running") == 0
    assert sample("zhiku_generate_requests_waiting") == 0


async def test_thirty_two_concurrent_streams_run_at_once(serve: Serve) -> None:
    """No lock around an upstream that batches: 32 streams overlap and all complete."""
    tokens = [f"t{i} " for i in range(10)]
    async with running(FakeOpenAI(tokens, delay_s=0.01, gather=32)) as fake:
        # The client waits out the fake's gather barrier: on a busy machine the last of the 32
        # streams can open seconds after the first, whose first token waits for it.
        stub = await serve(openai_settings(fake.base_url, openai_timeout_s=GATHER_TIMEOUT_S + 30))
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, fake.active)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        results = await asyncio.gather(*(collect(stub.Generate(ask(f"q{i}"))) for i in range(32)))
        watcher.cancel()
    assert all("".join(d) == "".join(tokens) and f.finish_reason == "stop" for d, f in results)
    assert peak == 32


async def test_sse_reader_follows_the_event_stream_format() -> None:
    """Comments and other fields skipped, multi-line data joined, CRLF accepted, an optional
    space after the colon, and a last event without its closing blank line still counted."""

    async def lines() -> AsyncIterator[bytes]:
        for line in [
            b": keep-alive\n",
            b"\n",
            b'data: {"a": 1}\r\n',
            b"\r\n",
            b"event: message\n",
            b"id: 7\n",
            b"data:first\n",
            b"data: second\n",
            b"\n",
            b"data: [DONE]",
        ]:
            yield line

    response = SimpleNamespace(content=lines())  # stands in for an aiohttp response: only .content is read
    assert [data async for data in sse_data(response)] == ['{"a": 1}', "first\nsecond", "[DONE]"]  # type: ignore[arg-type]
