"""A fake OpenAI-compatible server: real HTTP and server-sent events on loopback.

It speaks the wire protocol the ``openai`` backend talks to a real upstream (vLLM, OpenAI):
``POST /v1/chat/completions`` with ``stream: true`` answers ``chat.completion.chunk`` frames,
one per scripted token with a configurable delay, a last chunk with ``finish_reason``, a usage
chunk when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``. Every call is
recorded (body, headers, frames sent, and whether the client hung up before the end), which
is how tests prove that a cancelled gRPC stream closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class RecordedCall:
    body: dict[str, Any]
    headers: dict[str, str]
    tokens_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class FakeOpenAI:
    def __init__(
        self,
        tokens: list[str],
        *,
        delay_s: float = 0.0,
        prompt_tokens: int = 42,
        api_key: str = "test-key",
        error_status: int | None = None,
        model: str = "fake-model",
        sends_usage: bool = True,
    ) -> None:
        self.tokens = tokens
        self.delay_s = delay_s
        self.prompt_tokens = prompt_tokens
        self.api_key = api_key
        self.error_status = error_status
        self.model = model
        # False mimics upstreams that ignore stream_options.include_usage.
        self.sends_usage = sends_usage
        self.calls: list[RecordedCall] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("fake server not started")
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> str:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return self.base_url
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("fake OpenAI server did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    def _error(self, status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        call = RecordedCall(body=body, headers=dict(request.headers))
        self.calls.append(call)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            call.ended.set()
            return self._error(401, "Incorrect API key provided", "invalid_request_error")
        if self.error_status is not None:
            call.ended.set()
            return self._error(self.error_status, f"scripted failure {self.error_status}", "server_error")
        max_tokens = body.get("max_tokens") or len(self.tokens)
        tokens = self.tokens[:max_tokens]
        finish = "length" if max_tokens < len(self.tokens) else "stop"
        include_usage = self.sends_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        if not body.get("stream"):
            call.completed = True
            call.ended.set()
            return JSONResponse(self._completion(tokens, finish))
        return StreamingResponse(
            self._frames(call, tokens, finish, include_usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def _completion(self, tokens: list[str], finish: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens)},
                    "finish_reason": finish,
                }
            ],
            "usage": self._usage(len(tokens)),
        }

    async def _frames(
        self, call: RecordedCall, tokens: list[str], finish: str, include_usage: bool
    ) -> AsyncIterator[bytes]:
        def frame(payload: dict[str, Any] | str) -> bytes:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            return f"data: {data}\n\n".encode()

        try:
            yield frame(self._chunk({"role": "assistant", "content": ""}))
            for token in tokens:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield frame(self._chunk({"content": token}))
                call.tokens_sent += 1
            yield frame(self._chunk({}, finish))
            if include_usage:
                usage_chunk = self._chunk({})
                usage_chunk["choices"] = []
                usage_chunk["usage"] = self._usage(len(tokens))
                yield frame(usage_chunk)
            yield frame("[DONE]")
            call.completed = True
        finally:
            # Starlette cancels this generator when the client disconnects mid-stream.
            call.disconnected = not call.completed
            call.ended.set()


@contextlib.asynccontextmanager
async def running(fake: FakeOpenAI) -> AsyncIterator[FakeOpenAI]:
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
