"""Server-sent events of ``/v1/chat/completions``: OpenAI's chunk framing of a generation.

Citations and grounding ride on the first and the finish chunk; an error after the headers are
sent is reported in-band, as OpenAI does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import grpc

from services.gateway.chat.generation import Generation, tool_call_delta
from services.gateway.chat.planning import ChatPlan
from services.gateway.errors import rpc_error_body
from services.gateway.schemas.openai import Completion


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def stream_events(
    generation: Generation,
    completion: Completion,
    plan: ChatPlan,
    include_usage: bool,
    opening_extra: dict[str, Any] | None = None,
    on_complete: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """SSE frames: role (+ citations, ``abstained``, ``retrieval_query``, ``opening_extra``)
    first, content deltas and ``tool_calls`` pieces (one frame each, as OpenAI streams them),
    finish (+ the citations checked against the answer, and its ``unsupported`` sentences),
    optional usage, [DONE]. ``on_complete`` gets the whole answer
    before [DONE] (to store it).

    The ``finally`` cancels the gRPC stream when the client goes away: Starlette cancels this
    generator on disconnect, and the generate service then stops producing tokens. An answer
    cut short that way (or by a failure midway) still reaches ``on_complete`` with the text
    the client was shown, so a stored conversation keeps the turn, as chat apps keep an
    answer whose generation was stopped.
    """

    def framed(chunk: dict[str, Any]) -> bytes:
        if include_usage:  # OpenAI's shape: every chunk has "usage", null until the last one
            chunk.setdefault("usage", None)
        return sse(chunk)

    parts: list[str] = []
    completed = False
    try:
        opening = completion.chunk({"role": "assistant", "content": ""})
        if plan.grounded:
            opening["citations"] = plan.citations()
        opening.update(plan.grounded_fields(generation))
        opening.update(opening_extra or {})
        yield framed(opening)
        async for piece in generation.pieces():
            if isinstance(piece, str):
                parts.append(piece)
                yield framed(completion.chunk({"content": piece}))
                continue
            for call in piece:
                yield framed(completion.chunk({"tool_calls": [tool_call_delta(call)]}))
        # The finish chunk repeats the citations, now checked against the whole answer.
        yield framed({**completion.chunk({}, generation.finish_reason), **plan.grounded_fields(generation)})
        completed = True
        if on_complete is not None:
            await on_complete("".join(parts))
        if include_usage:
            yield sse(completion.usage_chunk(generation.usage))
        yield sse("[DONE]")
    except grpc.RpcError as error:
        # Headers are gone already: report in-band, as OpenAI does (the SDK raises APIError).
        _, body = rpc_error_body(error)
        yield sse(body)
    finally:
        generation.cancel()
        if on_complete is not None and not completed and parts:
            # The request is being cancelled: shield the store write from that cancellation.
            with anyio.CancelScope(shield=True):
                await on_complete("".join(parts))
