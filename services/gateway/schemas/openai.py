"""OpenAI's chat completion shapes: the request body as the ``openai`` SDK sends it, and the
``chat.completion`` / ``chat.completion.chunk`` objects the gateway answers with.

The request model accepts what the SDK sends and ignores fields it does not know (clients add
new ones all the time). Knowledge-base chat is selected by the extra body field
``knowledge_base`` or by the model ``kb:<name>``; ``target`` resolves which.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.errors import HttpApiError
from services.gateway.names import kb_name_error
from services.gateway.schemas.native import RetrievalParams
from services.gateway.schemas.refs import CONVERSATION_REF, FILE_CHAT_REF, KB_REF, MODEL_REF
from zhiku.v1 import generate_pb2

KB_MODEL_PREFIX = "kb:"


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
