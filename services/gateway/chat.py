"""OpenAI chat completions over the generate service, with optional knowledge-base grounding.

The request model accepts what the ``openai`` SDK sends and ignores fields it does not know
(clients add new ones all the time). Knowledge-base chat is selected by the extra body field
``knowledge_base`` or by the model ``kb:<name>``; its passages go to the generate service
with ``grounded=True`` and come back to the client as ``citations``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import grpc
from pydantic import BaseModel, ConfigDict, Field

from services.common.grpc_client import request_metadata
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError, rpc_error_body
from services.gateway.names import kb_name_error
from services.gateway.retrieval import citation, lookup_and_search, options_of
from services.gateway.schemas import (
    CONVERSATION_REF,
    FILE_CHAT_REF,
    KB_REF,
    MAX_QUERY_CHARS,
    MODEL_REF,
    RetrievalParams,
)
from zhiku.v1 import common_pb2, generate_pb2

KB_MODEL_PREFIX = "kb:"
# Roles the generate service understands; "developer" is OpenAI's newer name for "system".
_ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # refused (unsupported_features), never dropped

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        unsupported = sorted({part.type for part in self.content if part.type != "text"})
        if unsupported:
            raise HttpApiError(
                422, f"unsupported content part type(s): {', '.join(unsupported)}", param="messages"
            )
        return "\n".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(RetrievalParams):
    """OpenAI's request body plus ``knowledge_base``, ``top_k``, ``score_threshold`` and the
    retrieval options (``mode``, ``file_names``, ``metadata_filter``, ``knowledge_bases``,
    ``rerank``)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "default",
                    "messages": [{"role": "user", "content": "How do I request annual leave?"}],
                    "knowledge_base": "handbook",
                    "top_k": 5,
                    "stream": False,
                },
                {
                    "model": "default",
                    "messages": [{"role": "user", "content": "And how many days do I get?"}],
                    "conversation_id": "3f2a9c0e5b7d4e1f8a6b2c4d9e0f1a2b",
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ]
        },
    )

    model: str = Field(default="", json_schema_extra=MODEL_REF)
    messages: list[ChatMessageIn] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, description="number of choices; only 1 is supported")
    # OpenAI's tool calling and structured output. No generate backend passes them to a model
    # yet, so a request that relies on them is refused (unsupported_features) rather than
    # answered as if they had been honoured.
    tools: list[dict[str, Any]] | None = Field(default=None, description="not supported yet: 400")
    tool_choice: str | dict[str, Any] | None = Field(default=None, description="not supported yet")
    parallel_tool_calls: bool | None = Field(default=None, description="not supported yet")
    functions: list[dict[str, Any]] | None = Field(default=None, description="not supported yet: 400")
    function_call: str | dict[str, Any] | None = Field(default=None, description="not supported yet")
    response_format: dict[str, Any] | None = Field(default=None, description="only type 'text'")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, description="end-user id (accepted, not used)")
    knowledge_base: str | None = Field(default=None, json_schema_extra=KB_REF)
    conversation_id: str | None = Field(
        default=None,
        max_length=64,
        description="continue a stored conversation: its history is prepended, send only the new turn",
        json_schema_extra=CONVERSATION_REF,
    )
    history_length: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="with conversation_id: how many stored messages to prepend "
        "(default ZHIKU_GATEWAY_CONVERSATION_HISTORY_MESSAGES; 0 sends none)",
    )
    file_chat_id: str | None = Field(
        default=None,
        max_length=64,
        description="chat with the files of POST /v1/file_chats",
        json_schema_extra=FILE_CHAT_REF,
    )
    top_k: int | None = Field(default=None, ge=1, le=100)
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    rewrite: bool = Field(
        default=True,
        description="knowledge-base chat with history: search with the follow-up made standalone "
        "(the response's retrieval_query says what was searched); false searches the last message",
    )

    def unsupported_features(self) -> HttpApiError | None:
        """The 400 for a request that needs tool calling or structured output (None: fine).

        Clients such as LangChain's ``bind_tools`` send ``tools`` and act on ``tool_calls``;
        silently dropping them would give such a client a plain answer it cannot tell from a
        decision not to call a tool. "No tools" spelled out (an empty list, ``"none"``) is fine.
        """
        if self.tools or self.functions:
            name = "tools" if self.tools else "functions"
            return HttpApiError(
                400,
                f"{name} (tool calling) is not supported by this deployment's generate backend; "
                "send the request without it",
                param=name,
            )
        for name in ("tool_choice", "function_call"):
            value = getattr(self, name)
            if value is not None and value not in ("none", "auto"):
                return HttpApiError(
                    400, f"{name}={value!r} needs tool calling, which is not supported", param=name
                )
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            return HttpApiError(
                400,
                f"response_format type {kind!r} is not supported (structured output); only 'text'",
                param="response_format",
            )
        for message in self.messages:
            if message.role in ("tool", "function") or message.tool_calls:
                return HttpApiError(
                    400,
                    "messages hold tool calls or tool results, which need tool calling; it is not supported",
                    param="messages",
                )
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def target(self) -> tuple[str | None, str]:
        """(knowledge base or None, model for the generate service; "" = its default)."""
        kb = self.knowledge_base or None
        model = self.model
        if model.startswith(KB_MODEL_PREFIX):
            from_model = model[len(KB_MODEL_PREFIX) :]
            if kb is not None and kb != from_model:
                raise HttpApiError(422, f"model {model!r} contradicts knowledge_base {kb!r}", param="model")
            kb, model = from_model, ""
        if kb is not None:
            problem = kb_name_error(kb)
            if problem is not None:
                raise HttpApiError(422, problem, param="knowledge_base")
        return kb, model


def _pb_messages(messages: list[ChatMessageIn]) -> list[generate_pb2.ChatMessage]:
    converted = []
    for message in messages:
        role = _ROLE_ALIASES.get(message.role)
        if role is None:
            raise HttpApiError(422, f"unsupported message role {message.role!r}", param="messages")
        converted.append(generate_pb2.ChatMessage(role=role, content=message.text()))
    return converted


def _last_user_text(messages: list[generate_pb2.ChatMessage]) -> str:
    """The question to search with; one too long to search is refused in the gateway's terms
    (the embed service would refuse it in its own)."""
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            if len(message.content) > MAX_QUERY_CHARS:
                raise HttpApiError(
                    422,
                    f"the question is too long to search the knowledge base: {len(message.content):,} "
                    f"characters, at most {MAX_QUERY_CHARS:,}; ask a shorter question, or send long "
                    "text without a knowledge base",
                    param="messages",
                )
            return message.content
    raise HttpApiError(422, "knowledge-base chat needs a non-empty user message", param="messages")


@dataclass
class ChatPlan:
    """Everything decided before generation starts; errors up to here are plain HTTP errors."""

    request: generate_pb2.GenerateRequest
    knowledge_base: str | None
    passages: list[common_pb2.Passage] = field(default_factory=list)
    retrieval_query: str = ""

    def citations(self, grounding: generate_pb2.Grounding | None = None) -> list[dict[str, object]]:
        """The passages as citations, numbered as the answer cites them; with the answer's
        ``grounding``, each says whether the answer cites it and whether it backs what it says."""
        kb = self.knowledge_base or ""
        checked = {p.number: p for p in grounding.passages} if grounding is not None else {}
        found = []
        for number, passage in enumerate(self.passages, start=1):
            entry = {**citation(passage.knowledge_base or kb, passage), "index": number}
            if grounding is not None:
                check = checked.get(number)
                entry["cited"] = bool(check and check.cited)
                entry["supported"] = bool(check and check.supported)
            found.append(entry)
        return found

    def grounded_fields(self, generation: Generation) -> dict[str, Any]:
        """What a knowledge-base answer adds to the response: whether it abstained, what was
        searched, and (once the answer is complete) its checked citations and unsupported sentences."""
        if self.knowledge_base is None:
            return {}
        fields: dict[str, Any] = {"abstained": generation.abstained, "retrieval_query": self.retrieval_query}
        # An abstention states nothing from the passages: none is cited, none backs anything.
        grounding = generate_pb2.Grounding() if generation.abstained else generation.grounding
        if grounding is not None:
            fields["citations"] = self.citations(grounding)
            fields["unsupported"] = [
                {"text": u.text, "start": u.start, "end": u.end} for u in grounding.unsupported
            ]
        return fields

    def stored_grounding(self, generation: Generation) -> dict[str, Any]:
        """What a stored answer keeps of :meth:`grounded_fields` beside its citations."""
        return {k: v for k, v in self.grounded_fields(generation).items() if k != "citations"}


async def retrieval_query(
    clients: ServiceClients, messages: list[generate_pb2.ChatMessage], rewrite: bool, timeout_s: float
) -> str:
    """The last question, made standalone by the generate service when there is earlier
    conversation to draw on (a follow-up alone finds nothing useful)."""
    question = _last_user_text(messages)
    if not rewrite or not any(m.role == "user" for m in messages[:-1]):
        return question
    reply = await clients.generate.RewriteQuery(
        generate_pb2.RewriteQueryRequest(messages=messages), timeout=timeout_s
    )
    return reply.query[:MAX_QUERY_CHARS] or question


async def plan_chat(
    body: ChatCompletionRequest, clients: ServiceClients, settings: GatewaySettings
) -> ChatPlan:
    """Resolve the target, retrieve passages for knowledge-base chat, build the request."""
    kb_name, model = body.target()
    messages = _pb_messages(body.messages)
    passages: list[common_pb2.Passage] = []
    query = ""
    if kb_name is not None:
        query = await retrieval_query(clients, messages, body.rewrite, settings.request_timeout_s)
        _, passages = await lookup_and_search(
            clients,
            kb_name,
            body.knowledge_bases,
            query,
            top_k=body.top_k or settings.default_top_k,
            score_threshold=body.score_threshold or 0.0,
            timeout_s=settings.request_timeout_s,
            options=options_of(body),
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    request = generate_pb2.GenerateRequest(
        messages=messages,
        passages=passages,
        grounded=kb_name is not None,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        model=model,
    )
    return ChatPlan(request=request, knowledge_base=kb_name, passages=passages, retrieval_query=query)


@dataclass
class Completion:
    """Builds the OpenAI objects of one answer; id, created and model are shared by all chunks."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _envelope(self, kind: Literal["chat.completion", "chat.completion.chunk"]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def usage(usage: generate_pb2.Usage) -> dict[str, int]:
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        }

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage_chunk(self, usage: generate_pb2.Usage) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage(usage)}

    def whole(self, text: str, finish_reason: str, usage: generate_pb2.Usage) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": self.usage(usage),
        }


Reply = generate_pb2.GenerateResponse


@dataclass
class Generation:
    """A started gRPC stream with its first message already read, plus the final tallies."""

    call: grpc.aio.UnaryStreamCall
    first: Reply | None
    finish_reason: str = "stop"
    usage: generate_pb2.Usage = field(default_factory=generate_pb2.Usage)
    grounding: generate_pb2.Grounding | None = None

    @property
    def abstained(self) -> bool:
        """The service declined to answer from the passages (known from the first message)."""
        return bool(self.first is not None and self.first.abstained)

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas in order; finish reason, usage and grounding are recorded as they arrive."""
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
            following = await self.call.read()
            message = None if following is grpc.aio.EOF else following

    def cancel(self) -> None:
        """Stop the generation (a no-op once the stream has ended)."""
        self.call.cancel()


async def start_generation(clients: ServiceClients, plan: ChatPlan, timeout_s: float) -> Generation:
    """Start the stream and wait for its first message, so a failing start (unknown model,
    service down) is still an HTTP error status rather than an error inside a 200 stream."""
    # Explicit metadata: grpc.aio registers common's request-id interceptor (one object that is
    # both unary-unary and unary-stream) for unary-unary calls only, so streams would lose the id.
    call = clients.generate.Generate(plan.request, timeout=timeout_s, metadata=request_metadata())
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
    return completion.whole(text, generation.finish_reason, generation.usage)


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
    first, content deltas, finish (+ the citations checked against the answer, and its
    ``unsupported`` sentences), optional usage, [DONE]. ``on_complete`` gets the whole answer
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
        if plan.knowledge_base is not None:
            opening["citations"] = plan.citations()
        opening.update(plan.grounded_fields(generation))
        opening.update(opening_extra or {})
        yield framed(opening)
        async for delta in generation.deltas():
            parts.append(delta)
            yield framed(completion.chunk({"content": delta}))
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
