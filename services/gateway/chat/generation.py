"""A started generation: the generate service's token stream, read for deltas and tallies.

The first message is read before any HTTP response starts, so a failing start (unknown model,
service down) is still an HTTP error status rather than an error inside a 200 stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.common.grpc_client import request_metadata
from services.gateway.chat.planning import ChatPlan
from services.gateway.clients import ServiceClients
from services.gateway.schemas.openai import Completion
from zhiku.v1 import generate_pb2

Reply = generate_pb2.GenerateResponse
ToolPieces = list[generate_pb2.ToolCallDelta]


def tool_call_delta(piece: generate_pb2.ToolCallDelta) -> dict[str, Any]:
    """One streamed piece as OpenAI's ``delta.tool_calls[i]``: id, type and name on a call's
    first piece, arguments fragments after."""
    function: dict[str, str] = {"arguments": piece.arguments}
    if piece.name:
        function = {"name": piece.name, **function}
    delta: dict[str, Any] = {"index": piece.index}
    if piece.id:
        delta.update(id=piece.id, type="function")
    delta["function"] = function
    return delta


@dataclass
class Generation:
    """A started gRPC stream with its first message already read, plus the final tallies."""

    call: grpc.aio.UnaryStreamCall[generate_pb2.GenerateRequest, Reply]
    first: Reply | None
    finish_reason: str = "stop"
    usage: generate_pb2.Usage = field(default_factory=generate_pb2.Usage)
    grounding: generate_pb2.Grounding | None = None
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # tool calls assembled by index

    @property
    def abstained(self) -> bool:
        """The service declined to answer from the passages (known from the first message)."""
        return bool(self.first is not None and self.first.abstained)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The calls the model made, whole, as OpenAI's ``message.tool_calls``."""
        return [self.calls[index] for index in sorted(self.calls)]

    def _assemble(self, pieces: ToolPieces) -> None:
        for piece in pieces:
            call = self.calls.setdefault(
                piece.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = call["id"] or piece.id
            call["function"]["name"] = call["function"]["name"] or piece.name
            call["function"]["arguments"] += piece.arguments

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas in order (tool calls are assembled on the side, see :meth:`pieces`)."""
        async for piece in self.pieces():
            if isinstance(piece, str):
                yield piece

    async def pieces(self) -> AsyncIterator[str | ToolPieces]:
        """Text deltas and tool-call pieces in order; finish reason, usage, grounding and the
        assembled calls are recorded as they arrive."""
        message = self.first
        while message is not None:
            if message.finish_reason:
                self.finish_reason = message.finish_reason
            if message.HasField("usage"):
                self.usage = message.usage
            if message.HasField("grounding"):
                self.grounding = message.grounding
            if message.delta:
                yield message.delta
            if message.tool_calls:
                pieces = list(message.tool_calls)
                self._assemble(pieces)
                yield pieces
            following = await self.call.read()
            message = following if isinstance(following, Reply) else None  # else EOF

    def cancel(self) -> None:
        """Stop the generation (a no-op once the stream has ended)."""
        self.call.cancel()


async def start_generation(clients: ServiceClients, plan: ChatPlan, timeout_s: float) -> Generation:
    """Start the stream and wait for its first message, so a failing start (unknown model,
    service down) is still an HTTP error status rather than an error inside a 200 stream."""
    # Explicit metadata: grpc.aio registers common's request-id interceptor (one object that is
    # both unary-unary and unary-stream) for unary-unary calls only, so streams would lose the id.
    generate = clients.generate_for(plan.request.model)
    call = generate.Generate(plan.request, timeout=timeout_s, metadata=request_metadata())
    try:
        first = await call.read()
    except BaseException:
        call.cancel()
        raise
    return Generation(call=call, first=None if first is grpc.aio.EOF else first)


async def collect(generation: Generation, completion: Completion) -> dict[str, Any]:
    """Non-streaming answer: the deltas joined, with the final finish reason and usage."""
    try:
        text = "".join([delta async for delta in generation.deltas()])
    finally:
        generation.cancel()
    return completion.whole(text, generation.finish_reason, generation.usage, generation.tool_calls)
