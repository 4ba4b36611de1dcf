"""Tool calling at the gateway: tool turns converted for the generate service, and the model's
ability to call tools checked before any work is done.

The generate service reports each model's ability in ``ListModels`` (``ModelCard.tools``), so a
request with tools for a model that cannot call them is refused here with a 400 naming
``tools`` (the field the client must drop), before retrieval or generation starts; the generate
service refuses the same request itself (INVALID_ARGUMENT) should one slip past.
"""

from __future__ import annotations

import json
from typing import TypedDict

from services.gateway.clients import ServiceClients
from services.gateway.errors import HttpApiError
from services.gateway.schemas.openai import ChatCompletionRequest, ChatMessageIn
from zhiku.v1 import generate_pb2

DEFAULT_MODEL_ALIAS = "default"
# How an operator gives each generate backend tools (docs/guide/chat.md), for the refusal.
ENABLE_TOOLS = {
    "openai": "set ZHIKU_GENERATE_OPENAI_TOOLS=true if the upstream server calls tools",
    "vllm": "set ZHIKU_GENERATE_VLLM_TOOL_CALL_PARSER to the model's vLLM tool parser (e.g. hermes)",
    "llamacpp": "set ZHIKU_GENERATE_LLAMACPP_CHAT_FORMAT to a tool-calling chat format "
    "(e.g. chatml-function-calling)",
}
ANY_BACKEND = (
    "configure a backend that calls tools (openai, vllm with a tool parser, llamacpp with a "
    "tool-calling chat format)"
)


class ToolTurnFields(TypedDict, total=False):
    """``ChatMessage``'s tool fields, as :func:`tool_fields` gives them."""

    tool_calls: list[generate_pb2.ToolCall]
    tool_call_id: str
    name: str


class OptionsFields(TypedDict, total=False):
    """``GenerateRequest``'s tool and response-format fields, as :func:`options_fields` gives them."""

    tools_json: str
    tool_choice_json: str
    parallel_tool_calls: bool
    response_format_json: str


def tool_fields(message: ChatMessageIn) -> ToolTurnFields:
    """The ``ChatMessage`` fields of a tool turn: an assistant's calls, or a tool's result."""
    if message.role == "tool":
        if not message.tool_call_id:
            raise HttpApiError(422, "a message with role 'tool' needs tool_call_id", param="messages")
        return {"tool_call_id": message.tool_call_id, "name": message.name or ""}
    if message.tool_calls:
        if message.role != "assistant":
            raise HttpApiError(422, "only assistant messages carry tool_calls", param="messages")
        calls = [
            generate_pb2.ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
            for call in message.tool_calls
        ]
        return {"tool_calls": calls}
    return {}


def options_fields(body: ChatCompletionRequest) -> OptionsFields:
    """``GenerateRequest``'s tool and response-format fields, as JSON text (only those set)."""
    fields: OptionsFields = {}
    if body.tools:
        fields["tools_json"] = json.dumps(body.tools, ensure_ascii=False)
        if body.tool_choice is not None:
            fields["tool_choice_json"] = json.dumps(body.tool_choice, ensure_ascii=False)
        if body.parallel_tool_calls is not None:
            fields["parallel_tool_calls"] = body.parallel_tool_calls
    if body.response_format is not None:
        fields["response_format_json"] = json.dumps(body.response_format, ensure_ascii=False)
    return fields


async def model_card(clients: ServiceClients, model: str, timeout_s: float) -> generate_pb2.ModelCard | None:
    """What the generate service serving ``model`` says about it; None for a model it does not
    serve (left to generation's 404)."""
    request = generate_pb2.ListModelsRequest()
    listing = await clients.generate_for(model).ListModels(request, timeout=timeout_s)
    cards = list(listing.models)
    if model in ("", DEFAULT_MODEL_ALIAS):
        return cards[0] if cards else None
    return next((c for c in cards if c.id == model), None)


async def ensure_tool_support(
    clients: ServiceClients, body: ChatCompletionRequest, model: str, timeout_s: float
) -> None:
    """400 naming ``tools`` (or ``messages``, for tool turns alone) when the model cannot call
    tools; a model the service does not serve is left to generation's 404."""
    if not body.uses_tools:
        return
    card = await model_card(clients, model, timeout_s)
    if card is None or card.tools:
        return
    field = "tools" if body.tools else "messages"
    what = "tools" if body.tools else "messages with tool calls or tool results"
    how = ENABLE_TOOLS.get(card.backend, ANY_BACKEND)
    raise HttpApiError(
        400,
        f"model {card.id!r} (generate backend {card.backend}) cannot call tools, so {what} cannot be "
        f"honoured; send the request without them, or {how}",
        param=field,
    )


async def ensure_model_calls_tools(clients: ServiceClients, model: str, timeout_s: float) -> None:
    """400 naming ``model`` when it cannot call tools: agent chat is nothing else."""
    card = await model_card(clients, model, timeout_s)
    if card is None or card.tools:
        return
    how = ENABLE_TOOLS.get(card.backend, ANY_BACKEND)
    raise HttpApiError(
        400,
        f"model {card.id!r} (generate backend {card.backend}) cannot call tools, and agent chat needs "
        f"a model that can: name one whose capabilities.tools is true in GET /v1/models, or {how}",
        param="model",
    )
