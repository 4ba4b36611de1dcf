"""Plain chat (no knowledge base) through the real generate service, over real gRPC.

The extractive backend is deterministic, so streamed and non-streamed answers can be
compared. A small ticking backend, plugged into the same real generate service, stands in
for a slow LLM where a test needs a stream that does not end by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from services.gateway.app import create_app
from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, GenerationJob, ModelInfo
from services.generate.server import build_spec

from .support import asgi_client, gateway_settings, running_service, served

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


class TickingBackend(Backend):
    """Streams "tick" until cancelled; "fail midway" raises after the first piece, "short"
    stops there. Records the request id each generation ran under."""

    name = "ticking"

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.request_ids: list[str] = []

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="ticking", backend=self.name, context_window=4096)]

    @property
    def context_window(self) -> int:
        return 4096

    async def stream(self, job: GenerationJob) -> AsyncGenerator[Chunk, None]:
        self.request_ids.append(job.request_id)
        try:
            yield Chunk(delta="partial ")
            if job.prompt.question == "short":
                yield Chunk(finish_reason="stop")
                return
            if job.prompt.question == "fail midway":
                raise RuntimeError("backend exploded")
            while not job.cancel.is_set():
                await asyncio.sleep(0.02)
                yield Chunk(delta="tick ")
        finally:  # closed early or cancelled: either way the stream was stopped from outside
            self.stopped.set()


def generate_settings(**overrides: Any) -> GenerateSettings:
    return GenerateSettings(backend="extractive", metrics_port=0, **overrides)


@pytest.fixture
async def extractive_url() -> AsyncIterator[str]:
    settings = generate_settings()
    async with running_service(build_spec(settings), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with served(app) as url:
            yield url


@pytest.fixture
async def ticking() -> AsyncIterator[tuple[TickingBackend, str]]:
    backend = TickingBackend()
    settings = generate_settings()
    async with running_service(build_spec(settings, backend=backend), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with served(app) as url:
            yield backend, url


@asynccontextmanager
async def sdk(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
        yield client


async def test_sdk_non_streaming_answer(extractive_url: str) -> None:
    async with sdk(extractive_url) as client:
        response = await client.chat.completions.create(model="extractive", messages=QUESTION)
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == "extractive"
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "stop"
    usage = response.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert "citations" not in (response.model_extra or {})


async def test_sdk_stream_matches_the_non_streamed_answer(extractive_url: str) -> None:
    async with sdk(extractive_url) as client:
        whole = await client.chat.completions.create(model="extractive", messages=QUESTION)
        stream = await client.chat.completions.create(
            model="extractive", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # include_usage: a last chunk with no choices carries the usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


async def test_sse_framing_without_usage() -> None:
    settings = generate_settings()
    async with running_service(build_spec(settings), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with asgi_client(app) as client:
            response = await client.post(
                "/v1/chat/completions", json={"model": "extractive", "messages": QUESTION, "stream": True}
            )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-1] == ""  # every event ends with a blank line
    events = events[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "citations" not in chunks[0]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks)


async def test_unknown_model_is_404(extractive_url: str) -> None:
    async with sdk(extractive_url) as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-nope", messages=QUESTION)
    assert "gpt-nope" in raised.value.message


async def test_unknown_model_fails_before_the_stream_starts(extractive_url: str) -> None:
    async with sdk(extractive_url) as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="gpt-nope", messages=QUESTION, stream=True)


async def test_conversation_must_end_with_the_user(extractive_url: str) -> None:
    messages: list[ChatCompletionMessageParam] = [*QUESTION, {"role": "assistant", "content": "Paris."}]
    async with sdk(extractive_url) as client:
        with pytest.raises(openai.UnprocessableEntityError):
            await client.chat.completions.create(model="extractive", messages=messages)


async def test_models_fail_whole_while_ingest_is_down() -> None:
    settings = generate_settings()
    async with running_service(build_spec(settings), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with asgi_client(app) as client:
            # Without the ingest service the list cannot be complete: an error, not half a list.
            response = await client.get("/v1/models")
    assert response.status_code == 503


async def test_client_disconnect_cancels_the_generation(ticking: tuple[TickingBackend, str]) -> None:
    backend, url = ticking
    body = {"model": "ticking", "messages": [{"role": "user", "content": "count"}], "stream": True}
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: ") and "tick" in line:
                seen += 1
                if seen == 3:
                    break
    # Leaving the block closed the connection mid-stream; the backend must be told to stop.
    await asyncio.wait_for(backend.stopped.wait(), timeout=20)


async def test_failure_mid_stream_reaches_the_sdk_as_an_error(ticking: tuple[TickingBackend, str]) -> None:
    _, url = ticking
    received: list[str] = []
    async with sdk(url) as client:
        stream = await client.chat.completions.create(
            model="ticking", messages=[{"role": "user", "content": "fail midway"}], stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert received == ["partial "]
    assert "backend exploded" in raised.value.message


async def test_request_id_reaches_the_generate_service(ticking: tuple[TickingBackend, str]) -> None:
    backend, url = ticking
    body = {"model": "ticking", "messages": [{"role": "user", "content": "short"}]}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "trace-42"})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "trace-42"
        assert response.json()["choices"][0]["message"]["content"] == "partial "
        fresh = await client.post("/v1/chat/completions", json=body)
    assert backend.request_ids == ["trace-42", fresh.headers["x-request-id"]]


async def test_an_answer_cut_short_by_the_client_stays_in_its_conversation(
    ticking: tuple[TickingBackend, str],
) -> None:
    """Stopping a stream (closing it) keeps the turn: the question and the text shown so far."""
    backend, url = ticking
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        body = {
            "model": "ticking",
            "messages": [{"role": "user", "content": "count"}],
            "stream": True,
            "conversation_id": conversation,
        }
        shown: list[str] = []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    shown.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
                    if "".join(shown).count("tick") == 3:
                        break
        await asyncio.wait_for(backend.stopped.wait(), timeout=20)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            messages = (await client.get(f"/v1/conversations/{conversation}")).json()["messages"]
            if messages or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "count"
    stored = messages[1]["content"]
    assert stored.startswith("".join(shown)) and stored.count("tick") >= 3
