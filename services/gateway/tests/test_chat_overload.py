"""A chat the generate service cannot start in time is HTTP 503 with ``Retry-After``, at once.

The real generate service (one slot, no wait allowed) behind the real gateway over gRPC; a
ticking backend holds the only slot with a stream that runs until its client leaves. Every chat
route starts the generation before it answers, so the refusal is an HTTP status on each of
them, streamed or not, never an error inside a 200 stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from services.gateway.app import create_app
from services.generate.server import build_spec

from .support import gateway_settings, running_service, served
from .test_chat_plain import TickingBackend, generate_settings

COUNT = {"model": "ticking", "messages": [{"role": "user", "content": "count"}]}
SHORT = {"model": "ticking", "messages": [{"role": "user", "content": "short"}]}


@pytest.fixture
async def one_slot() -> AsyncIterator[str]:
    settings = generate_settings(max_concurrency=1, max_queue_wait_s=0)
    async with running_service(build_spec(settings, backend=TickingBackend()), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with served(app) as url:
            yield url


async def slot_freed() -> None:
    """Wait until no generation runs (the gauge drops as the slot is released)."""
    for _ in range(3000):
        if not REGISTRY.get_sample_value("zhiku_generate_requests_running", {"backend": "ticking"}):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the cancelled generation never gave its slot back")


def assert_overloaded(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    if "error" in body:  # OpenAI's shape
        assert body["error"]["type"] == "server_error" and body["error"]["code"] == "unavailable"
        message = body["error"]["message"]
    else:  # Chatchat's routes answer in its envelope
        assert body["code"] == 503
        message = body["msg"]
    assert "generation is at capacity" in message


async def test_a_chat_that_cannot_start_is_503_with_retry_after(one_slot: str) -> None:
    async with (
        httpx.AsyncClient(base_url=one_slot, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json={**COUNT, "stream": True}) as holder,
    ):
        assert holder.status_code == 200  # this stream holds the only slot until it is closed

        assert_overloaded(await client.post("/v1/chat/completions", json=SHORT))
        streamed = await client.post("/v1/chat/completions", json={**SHORT, "stream": True})
        assert_overloaded(streamed)  # refused before the stream starts: a status, not an SSE error
        assert_overloaded(await client.post("/chat/chat", json={"query": "short", "stream": True}))

        async with openai.AsyncOpenAI(base_url=f"{one_slot}/v1", api_key="unused", max_retries=0) as sdk:
            with pytest.raises(openai.InternalServerError) as raised:
                await sdk.chat.completions.create(**SHORT)  # type: ignore[call-overload]
        assert raised.value.status_code == 503
        assert int(raised.value.response.headers["retry-after"]) >= 1

    # The holder left; once the service has freed its slot, the next chat is answered.
    await slot_freed()
    async with httpx.AsyncClient(base_url=one_slot, timeout=30) as client:
        answered = await client.post("/v1/chat/completions", json=SHORT)
        chatchat = await client.post("/chat/chat", json={"query": "short"})
    assert answered.status_code == 200 and "retry-after" not in answered.headers
    assert answered.json()["choices"][0]["message"]["content"] == "partial "
    assert chatchat.status_code == 200
    assert json.loads(chatchat.text.strip().removeprefix("data: "))["text"] == "partial "
