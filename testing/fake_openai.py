"""A fake OpenAI-compatible server: real HTTP and server-sent events on loopback.

It speaks the wire protocol the ``openai`` backend talks to a real upstream (vLLM, OpenAI):
``POST /v1/chat/completions`` with ``stream: true`` answers ``chat.completion.chunk`` frames,
one per scripted token after a configurable time to first token (``ttft_s``) and then one token
every ``delay_s`` (the token rate), a last chunk with ``finish_reason``, a usage
chunk when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``. Every call is
recorded (body, headers, frames sent, and whether the client hung up before the end), which
is how tests prove that a cancelled gRPC stream closes the upstream request.

It also runs as its own process, for benchmarks and the end-to-end tests:

    python -m testing.fake_openai --port 8090 --ttft-ms 50 --tokens-per-s 50 --tokens 64

or, for a test that needs a particular answer (every call gets the same one):

    python -m testing.fake_openai --port 8090 --script "Visitors park in garage B [1]."

Tool calling: ``replies`` scripts the answers of successive calls, each either text or
``ScriptedToolCall``s. Tool calls stream as OpenAI streams them (the first piece of a call
carries its id, type and name with empty arguments, then the arguments follow in fragments of
``fragment_chars``) with finish_reason "tool_calls"; non-streamed, they are the message's
``tool_calls`` with ``content`` null.

Pictures: a user message's ``content`` may be a list of parts, ``{"type": "text", ...}`` and
``{"type": "image_url", "image_url": {"url": ...}}`` with an http(s) URL or a base64 data URL
of a PNG, JPEG, GIF or WebP, as OpenAI takes them; a malformed part answers 400 as OpenAI does.
``RecordedCall.images`` and ``RecordedCall.prompt`` say what a call sent, and ``respond``
scripts the answer from the call itself (a caption per picture, whatever order they come in).
``answer_delay_s`` holds back non-streamed answers (a slow vision model).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

GATHER_TIMEOUT_S = 30.0


_DATA_URL = re.compile(r"data:(image/(?:png|jpeg|gif|webp));base64,(.*)", re.DOTALL)


@dataclass(frozen=True)
class ReceivedImage:
    """A picture a call sent: its URL, and for a data URL its media type and decoded bytes."""

    url: str
    media_type: str = ""
    data: bytes = b""


def _content_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _image_of(url: str) -> ReceivedImage:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return ReceivedImage(url)
    return ReceivedImage(url, match.group(1), base64.b64decode(match.group(2), validate=True))


def content_error(body: dict[str, Any]) -> str | None:
    """What OpenAI would reject in the messages' content parts, or None when they are valid."""
    for index, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"messages[{index}].content must be a string or an array of content parts"
        for number, part in enumerate(content):
            where = f"messages[{index}].content[{number}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    return f"{where}.text must be a string"
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else None
                if not isinstance(url, str):
                    return f"{where}.image_url.url must be a string"
                if image.get("detail", "auto") not in ("auto", "low", "high"):
                    return f"{where}.image_url.detail must be auto, low or high"
                if url.startswith(("http://", "https://")):
                    continue
                try:
                    if _DATA_URL.fullmatch(url) is None or not _image_of(url).data:
                        raise ValueError(url[:40])
                except (ValueError, binascii.Error):
                    return f"Invalid image URL in {where}: expected a base64 image data URL or http(s)"
            else:
                return f"Invalid content part type {kind!r} in {where}: expected 'text' or 'image_url'"
    return None


@dataclass
class RecordedCall:
    body: dict[str, Any]
    headers: dict[str, str]
    tokens_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def images(self) -> list[ReceivedImage]:
        """The pictures of the call's messages (image_url content parts), in order."""
        return [
            _image_of(part["image_url"]["url"])
            for message in self.body.get("messages") or []
            for part in _content_parts(message)
            if part.get("type") == "image_url"
        ]

    @property
    def prompt(self) -> str:
        """The text of the call's user messages: plain content and text parts, joined by newlines."""
        texts: list[str] = []
        for message in self.body.get("messages") or []:
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            texts.extend(p["text"] for p in _content_parts(message) if p.get("type") == "text")
        return "\n".join(texts)


@dataclass
class ScriptedToolCall:
    name: str
    arguments: str  # JSON text, as a model writes it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Reply:
    """One scripted answer: text tokens, or tool calls (then finish_reason "tool_calls")."""

    tokens: list[str] = field(default_factory=list)
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)
    fragment_chars: int = 4  # streamed arguments arrive in pieces this long

    def deltas(self) -> Iterable[dict[str, Any]]:
        """The ``delta`` objects after the role chunk, as OpenAI streams them."""
        for token in self.tokens:
            yield {"content": token}
        for index, call in enumerate(self.tool_calls):
            opening = {"index": index, "id": call.id, "type": "function"}
            yield {"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]}
            step = max(1, self.fragment_chars)
            for start in range(0, len(call.arguments), step):
                piece = call.arguments[start : start + step]
                yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


class FakeOpenAI:
    def __init__(
        self,
        tokens: list[str],
        *,
        replies: Iterable[Reply] = (),
        delay_s: float = 0.0,
        prompt_tokens: int = 42,
        api_key: str = "test-key",
        error_status: int | None = None,
        model: str = "fake-model",
        sends_usage: bool = True,
        ttft_s: float = 0.0,
        fail_first: int = 0,
        record: bool = True,
        gather: int = 0,
        hold: asyncio.Event | None = None,
        respond: Callable[[RecordedCall], str | Reply] | None = None,
        answer_delay_s: float = 0.0,
    ) -> None:
        self.tokens = tokens
        # Answers of the next calls, in order; once used up, calls get ``tokens``.
        self.replies: deque[Reply] = deque(replies)
        self.delay_s = delay_s
        self.ttft_s = ttft_s
        # The first ``fail_first`` calls answer error_status (503 when unset), later ones stream.
        self.fail_first = fail_first
        # False keeps no per-call records (a long benchmark run would grow them without bound).
        self.record = record
        self.active = 0  # streams in progress right now
        # Hold every stream's first token until this many streams are open at once (at most
        # GATHER_TIMEOUT_S): proves concurrency without racing the clock on a busy machine.
        self.gather = gather
        # Hold every stream's first token until this event is set: keeps calls in flight for
        # as long as a test needs (a full queue), with no clock involved.
        self.hold = hold
        # The answer of each call made from the call itself (text or a Reply), when no scripted
        # ``replies`` are left: e.g. a caption chosen by the picture the call sent.
        self.respond = respond
        # Non-streamed answers leave after this long (a slow model; streams use ttft_s).
        self.answer_delay_s = answer_delay_s
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

    async def start(self, port: int = 0) -> str:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
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
        if self.record:
            self.calls.append(call)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            call.ended.set()
            return self._error(401, "Incorrect API key provided", "invalid_request_error")
        if self.fail_first > 0:
            self.fail_first -= 1
            call.ended.set()
            status = self.error_status or 503
            return self._error(status, f"scripted failure {status}", "server_error")
        if self.error_status is not None:
            call.ended.set()
            return self._error(self.error_status, f"scripted failure {self.error_status}", "server_error")
        if problem := content_error(body):
            call.ended.set()
            return self._error(400, problem, "invalid_request_error")
        include_usage = self.sends_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        if self.replies:
            reply = self.replies.popleft()
            finish = "tool_calls" if reply.tool_calls else "stop"
        elif self.respond is not None:
            answer = self.respond(call)
            reply = Reply(tokens=script_tokens(answer)) if isinstance(answer, str) else answer
            finish = "tool_calls" if reply.tool_calls else "stop"
        else:
            max_tokens = body.get("max_tokens") or len(self.tokens)
            reply = Reply(tokens=self.tokens[:max_tokens])
            finish = "length" if max_tokens < len(self.tokens) else "stop"
        if not body.get("stream"):
            if self.answer_delay_s:
                await asyncio.sleep(self.answer_delay_s)
            call.completed = True
            call.ended.set()
            return JSONResponse(self._completion(reply, finish))
        return StreamingResponse(
            self._frames(call, reply, finish, include_usage),
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

    def _completion(self, reply: Reply, finish: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.tokens)}
        if reply.tool_calls:
            message = {
                "role": "assistant",
                "content": message["content"] or None,
                "tool_calls": [call.as_dict() for call in reply.tool_calls],
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish},
            ],
            "usage": self._usage(len(reply.tokens) + len(reply.tool_calls)),
        }

    async def _frames(
        self, call: RecordedCall, reply: Reply, finish: str, include_usage: bool
    ) -> AsyncIterator[bytes]:
        def frame(payload: dict[str, Any] | str) -> bytes:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            return f"data: {data}\n\n".encode()

        self.active += 1
        try:
            yield frame(self._chunk({"role": "assistant", "content": ""}))
            # Tokens leave on a fixed schedule (ttft, then one per delay_s), so the rate holds
            # however long the event loop took to write the previous frame.
            if self.gather:
                deadline = time.monotonic() + GATHER_TIMEOUT_S
                while self.active < self.gather and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
            if self.hold is not None:
                await self.hold.wait()
            due = time.perf_counter() + self.ttft_s
            for index, delta in enumerate(reply.deltas()):
                if index:
                    due += self.delay_s
                pause = due - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                yield frame(self._chunk(delta))
                call.tokens_sent += 1
            yield frame(self._chunk({}, finish))
            if include_usage:
                usage_chunk = self._chunk({})
                usage_chunk["choices"] = []
                usage_chunk["usage"] = self._usage(call.tokens_sent)
                yield frame(usage_chunk)
            yield frame("[DONE]")
            call.completed = True
        finally:
            # Starlette cancels this generator when the client disconnects mid-stream.
            self.active -= 1
            call.disconnected = not call.completed
            call.ended.set()


class ThreadedFake:
    """A FakeOpenAI on its own event loop in a thread, for synchronous tests beside processes.

    ``start``/``stop`` may repeat on the same port: that is how a test takes the upstream
    down and brings it back. Plain attributes (``calls``, ``active``) are read across threads.
    """

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._thread.start()

    def _run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> str:
        self._run(self.fake.start(self.port))
        self.port = int(self.fake.base_url.rsplit(":", 1)[1].split("/")[0])
        return self.fake.base_url

    def stop(self) -> None:
        self._run(self.fake.stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.asynccontextmanager
async def running(fake: FakeOpenAI) -> AsyncIterator[FakeOpenAI]:
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def words(count: int) -> list[str]:
    """``count`` distinct one-token words ("w0 ", "w1 ", ...), the default scripted answer."""
    return [f"w{i} " for i in range(count)]


def script_tokens(text: str) -> list[str]:
    """``text`` as tokens of one word each (with the whitespace after it), streamed in order."""
    return re.findall(r"\s+|\S+\s*", text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible streaming server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="0: as fast as possible")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--script", help="the exact answer to stream, word by word (instead of --tokens)")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(
        script_tokens(args.script) if args.script else words(args.tokens),
        delay_s=1.0 / args.tokens_per_s if args.tokens_per_s else 0.0,
        ttft_s=args.ttft_ms / 1000,
        api_key=args.api_key,
        model=args.model,
        record=False,
    )
    # The event loop uvloop/httptools when installed, as a production upstream would run.
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
