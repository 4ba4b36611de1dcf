"""Generation through the public API: gateway and generate processes, openai backend, and an
OpenAI-protocol test server that records what it saw (connections closed, streams at once).

Proves what production depends on: a client that hangs up stops the model upstream, many
concurrent streams all finish, and a dead model server is a clear 503 that heals by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.fake_openai import FakeOpenAI, ThreadedFake, words
from testing.generation_stack import GenerationStack, generation_stack

pytestmark = pytest.mark.e2e

ANSWER = words(40)
LOGS = Path(__file__).resolve().parents[2] / "test-output" / "e2e-generation"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedFake]:
    threaded = ThreadedFake(FakeOpenAI(ANSWER, delay_s=0.02, ttft_s=0.05))
    threaded.start()
    yield threaded
    threaded.close()


@pytest.fixture(scope="module")
def stack(upstream: ThreadedFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GenerationStack]:
    data = tmp_path_factory.mktemp("gen-data")
    # No upstream retries here (unit tests cover them): a dead upstream answers at once.
    with generation_stack(
        upstream.fake.base_url, data, LOGS, ZHIKU_GENERATE_OPENAI_MAX_RETRIES="0"
    ) as running:
        yield running


def chat(stream: bool = True, **extra: object) -> dict[str, object]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": "Tell me about the blob store."}],
        "stream": stream,
        **extra,
    }


def content_deltas(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                if choice["delta"].get("content"):
                    out.append(choice["delta"]["content"])
    return out


def wait_for(predicate, timeout_s: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s  # hang guard, not a timing assertion
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_client_disconnect_closes_the_upstream_request(
    stack: GenerationStack, upstream: ThreadedFake
) -> None:
    seen = len(upstream.fake.calls)
    received: list[str] = []
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=chat()) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            received += content_deltas([line])
            if len(received) >= 3:
                break  # leaving the block closes the connection mid-answer
    assert "".join(ANSWER).startswith("".join(received))
    assert wait_for(lambda: len(upstream.fake.calls) > seen and upstream.fake.calls[-1].ended.is_set())
    call = upstream.fake.calls[-1]
    assert call.disconnected, "the upstream request was not closed when the client left"
    assert not call.completed
    assert call.tokens_sent < len(ANSWER)


def test_thirty_two_concurrent_streams_complete(stack: GenerationStack, upstream: ThreadedFake) -> None:
    peak = 0

    async def one(client: httpx.AsyncClient) -> list[str]:
        async with client.stream("POST", "/v1/chat/completions", json=chat()) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        return content_deltas(lines)

    async def run() -> list[list[str]]:
        nonlocal peak

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, upstream.fake.active)
                await asyncio.sleep(0.01)

        upstream.fake.gather = 32  # first tokens wait until all 32 streams are open upstream
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60, limits=limits) as client:
            watcher = asyncio.create_task(watch())
            try:
                return await asyncio.gather(*(one(client) for _ in range(32)))
            finally:
                watcher.cancel()
                upstream.fake.gather = 0

    answers = asyncio.run(run())
    assert len(answers) == 32
    assert all("".join(answer) == "".join(ANSWER) for answer in answers)
    assert peak == 32, f"only {peak} streams reached the upstream at once"


def test_dead_backend_is_503_and_recovers(stack: GenerationStack, upstream: ThreadedFake) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as client:
        upstream.stop()
        try:
            for stream in (False, True):
                reply = client.post("/v1/chat/completions", json=chat(stream=stream))
                assert reply.status_code == 503, reply.text
                message = reply.json()["error"]["message"]
                assert "OpenAI-compatible upstream" in message and "unreachable" in message, message
        finally:
            upstream.start()  # same port: the model server comes back
        reply = client.post("/v1/chat/completions", json=chat(stream=False))
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "".join(ANSWER)
