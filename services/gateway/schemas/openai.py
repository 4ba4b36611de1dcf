"""OpenAI's chat completion shapes: the request body as the ``openai`` SDK sends it, and the
``chat.completion`` / ``chat.completion.chunk`` objects the gateway answers with.

The request model accepts what the SDK sends and ignores fields it does not know (clients add
new ones all the time). Knowledge-base chat is selected by the extra body field
``knowledge_base`` or by the model ``kb:<name>``; ``target`` resolves which. Tool calling
(``tools``, ``tool_choice``, ``parallel_tool_calls``, tool turns) and ``response_format`` pass
through to the generate service; the legacy ``functions`` / ``function_call`` are refused.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

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


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    arguments: str = Field(description="JSON text, as the model wrote it")


class ToolCallIn(BaseModel):
    """An assistant turn's call, as the model made it (OpenAI's ``message.tool_calls[i]``)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = Field(default=None, description="assistant turns: the calls made")
    tool_call_id: str | None = Field(default=None, description="role tool: the call this result answers")
    name: str | None = None

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
    # OpenAI's tool calling and structured output: passed through to the model where its backend
    # supports them; a backend that cannot call tools makes the request a 400 naming ``tools``.
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="function tools the model may call (400 where the model cannot call tools)"
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description='"auto", "none", "required" or {"type": "function", "function": {"name"}}'
    )
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(default=None, description="legacy: refused, use tools")
    function_call: str | dict[str, Any] | None = Field(default=None, description="legacy: refused")
    response_format: dict[str, Any] | None = Field(
        default=None, description="text, json_object or json_schema, where the backend supports it"
    )
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
    search_engine: bool | Annotated[str, Field(max_length=32)] | None = Field(
        default=None,
        description="answer from a web search instead of a knowledge base: true searches with the "
        "configured provider (ZHIKU_GATEWAY_AGENT_SEARCH_PROVIDER), or name it (searxng, bing, tavily, "
        "duckduckgo); citations carry each page's title and url",
        examples=[True, "searxng"],
    )
    top_k: int | None = Field(default=None, ge=1, le=100)
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    rewrite: bool = Field(
        default=True,
        description="knowledge-base chat with history: search with the follow-up made standalone "
        "(the response's retrieval_query says what was searched); false searches the last message",
    )

    def refused_fields(self) -> HttpApiError | None:
        """The 400 for OpenAI's deprecated ``functions`` / ``function_call``, or a ``tool_choice``
        that asks for a call with no ``tools`` to call (None: fine).

        Legacy functions are refused, not silently dropped or rewritten: a client that sends
        them acts on ``function_call`` in the answer, which never comes; ``tools`` is the
        supported spelling. "No tools" spelled out (``[]``, ``"none"``) is fine.
        """
        if not self.tools and self.tool_choice is not None and self.tool_choice not in ("none", "auto"):
            return HttpApiError(
                400,
                f"tool_choice={self.tool_choice!r} needs tools to call; none were sent",
                param="tool_choice",
            )
        for name in ("functions", "function_call"):
            if getattr(self, name) is not None:
                return HttpApiError(
                    400,
                    f"{name} is OpenAI's deprecated function calling; send tools and tool_choice",
                    param=name,
                )
        if any(message.role == "function" for message in self.messages):
            return HttpApiError(
                400, "role 'function' is deprecated; send tool results as role 'tool'", param="messages"
            )
        return None

    @property
    def uses_tools(self) -> bool:
        """Tools offered, or tool turns in the conversation: only a tool-calling model can serve it."""
        return bool(self.tools) or any(m.role == "tool" or m.tool_calls for m in self.messages)

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
        if kb is not None and self.search_engine not in (None, False, ""):
            raise HttpApiError(
                422, "search_engine cannot be combined with a knowledge base", param="search_engine"
            )
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

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage_chunk(self, usage: generate_pb2.Usage) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage(usage)}

    def whole(
        self,
        text: str,
        finish_reason: str,
        usage: generate_pb2.Usage,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The whole answer; one that calls tools has them as ``tool_calls`` (content null
        unless the model also wrote text), as OpenAI answers."""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_calls:
            message = {"role": "assistant", "content": text or None, "tool_calls": tool_calls}
        return {
            **self._envelope("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": self.usage(usage),
        }
