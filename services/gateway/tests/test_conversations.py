"""Conversations, feedback and the OpenAI request fields, through the real generate service
(over gRPC) with a recording backend: it answers "answer <n>" and keeps the prompt messages
the model would have seen, so a test can check that a second turn's prompt holds the first."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from services.gateway.app import create_app
from services.gateway.chat.history import prepare_turn
from services.gateway.schemas.openai import ChatCompletionRequest
from services.gateway.store import GatewayStore
from services.gateway.store.conversations import NewMessage
from services.generate.backends.base import Backend
from services.generate.config import GenerateSettings
from services.generate.domain import Chunk, GenerationJob, ModelInfo
from services.generate.server import build_spec

from .support import gateway_settings, running_service, served


class RecordingBackend(Backend):
    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []
        self.sampling: list[object] = []

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="recording", backend=self.name, context_window=8192)]

    @property
    def context_window(self) -> int:
        return 8192

    async def stream(self, job: GenerationJob) -> AsyncGenerator[Chunk, None]:
        self.prompts.append(job.prompt.message_dicts())
        self.sampling.append(job.sampling)
        yield Chunk(delta="answer ")
        yield Chunk(delta=str(len(self.prompts)))
        yield Chunk(finish_reason="stop")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[RecordingBackend, str]]:
    backend = RecordingBackend()
    settings = GenerateSettings(backend="extractive", metrics_port=0)
    async with running_service(build_spec(settings, backend=backend), settings) as service:
        app = create_app(gateway_settings({"generate": f"127.0.0.1:{service.port}"}))
        async with served(app) as url:
            yield backend, url


def _texts(prompt: list[dict[str, str]]) -> str:
    return "\n".join(message["content"] for message in prompt)


async def test_conversation_lifecycle_and_history(gateway: tuple[RecordingBackend, str]) -> None:
    backend, url = gateway
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        created = await client.post("/v1/conversations", json={"title": ""})
        assert created.status_code == 201, created.text
        conversation = created.json()
        assert set(conversation) == {"id", "title", "knowledge_base", "created_at", "updated_at"}
        cid = conversation["id"]

        first = await client.post(
            "/v1/chat/completions",
            json={
                "model": "default",
                "messages": [{"role": "user", "content": "My name is Ada Lovelace."}],
                "conversation_id": cid,
            },
        )
        assert first.status_code == 200, first.text
        assert first.json()["conversation_id"] == cid
        first_message_id = first.json()["message_id"]
        assert first.json()["choices"][0]["message"]["content"] == "answer 1"

        # The client sends only the new turn; the stored history goes in front of it.
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk:
            stream = await sdk.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "What is my name?"}],
                stream=True,
                extra_body={"conversation_id": cid},
            )
            chunks = [chunk async for chunk in stream]
        opening = chunks[0].model_extra or {}
        assert opening["conversation_id"] == cid
        second_message_id = opening["message_id"]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer 2"

        second_prompt = _texts(backend.prompts[1])
        assert "My name is Ada Lovelace." in second_prompt

        assert "answer 1" in second_prompt
        assert "What is my name?" in second_prompt
        assert "Ada" not in _texts(backend.prompts[0]).replace("My name is Ada Lovelace.", "")

        stored = (await client.get(f"/v1/conversations/{cid}")).json()
        assert [(m["role"], m["content"]) for m in stored["messages"]] == [
            ("user", "My name is Ada Lovelace."),
            ("assistant", "answer 1"),
            ("user", "What is my name?"),
            ("assistant", "answer 2"),
        ]
        assert [m["id"] for m in stored["messages"] if m["role"] == "assistant"] == [
            first_message_id,
            second_message_id,
        ]
        assert stored["title"] == "My name is Ada Lovelace."  # first user message names it
        assert all(m["feedback"] is None and m["citations"] == [] for m in stored["messages"])

        feedback = await client.post(
            f"/v1/messages/{second_message_id}/feedback", json={"score": 0, "reason": "wrong name"}
        )
        assert feedback.status_code == 200, feedback.text
        assert feedback.json() == {"id": second_message_id, "score": 0, "reason": "wrong name"}
        again = await client.post(f"/v1/messages/{second_message_id}/feedback", json={"score": 100})
        assert again.json()["score"] == 100
        stored = (await client.get(f"/v1/conversations/{cid}")).json()
        assert stored["messages"][3]["feedback"] == {"score": 100, "reason": ""}

        bad_score = await client.post(f"/v1/messages/{second_message_id}/feedback", json={"score": 101})
        assert bad_score.status_code == 422
        unknown = await client.post("/v1/messages/nope/feedback", json={"score": 1})
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "message_id"

        # history_length overrides the gateway's default per request: 0 prepends nothing.
        alone = await client.post(
            "/v1/chat/completions",
            json={
                "model": "default",
                "messages": [{"role": "user", "content": "Who am I?"}],
                "conversation_id": cid,
                "history_length": 0,
            },
        )
        assert alone.status_code == 200, alone.text
        assert "Ada Lovelace" not in _texts(backend.prompts[-1])
        assert "Who am I?" in _texts(backend.prompts[-1])

        renamed = await client.patch(f"/v1/conversations/{cid}", json={"title": "Names"})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Names"
        other = (await client.post("/v1/conversations", json={"title": "other"})).json()
        listed = (await client.get("/v1/conversations")).json()["data"]
        assert [c["id"] for c in listed] == [other["id"], cid]  # newest activity first

        assert (await client.delete(f"/v1/conversations/{cid}")).status_code == 204
        assert (await client.get(f"/v1/conversations/{cid}")).status_code == 404
        assert (
            await client.post(f"/v1/messages/{second_message_id}/feedback", json={"score": 5})
        ).status_code == 404
        gone = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "conversation_id": cid},
        )
        assert gone.status_code == 404 and gone.json()["error"]["param"] == "conversation_id"


async def test_openai_request_fields(gateway: tuple[RecordingBackend, str]) -> None:
    backend, url = gateway
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk:
        reply = await sdk.chat.completions.create(
            model="default",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            temperature=0.3,
            top_p=0.5,
            max_tokens=7,
            stop=["\n\n"],
            n=1,
            user="user-42",
            extra_body={"some_future_field": {"x": 1}},  # unknown fields are ignored
        )
        assert reply.choices[0].message.content == "answer 1"
        sampling = backend.sampling[0]
        assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (  # type: ignore[attr-defined]
            pytest.approx(0.3),
            pytest.approx(0.5),
            7,
        )
        assert list(sampling.stop) == ["\n\n"]  # type: ignore[attr-defined]

        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}], n=2
            )
        assert refused.value.status_code == 400
        assert refused.value.body["param"] == "n"  # type: ignore[index]
        assert "n=1" in refused.value.body["message"]  # type: ignore[index]

        stream = await sdk.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        assert "conversation_id" not in (chunks[0].model_extra or {})  # only with a conversation


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_tool_calling_and_structured_output_are_refused_never_dropped(
    gateway: tuple[RecordingBackend, str],
) -> None:
    """A backend that cannot call tools: a client that sends tools must not get a plain answer
    it would read as "no tool needed" (test_tool_calling.py has backends that can)."""
    backend, url = gateway
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    refused_requests: list[tuple[str, dict[str, Any]]] = [
        ("tools", {"tools": [TOOL]}),
        ("tool_choice", {"tool_choice": "required"}),
        ("functions", {"functions": [TOOL["function"]]}),
        (
            "messages",
            {
                "messages": [
                    *hi,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                ]
            },
        ),
    ]
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk:
        asked_before = len(backend.prompts)
        for param, fields in refused_requests:
            arguments: dict[str, Any] = {"model": "default", "messages": hi, **fields}
            for stream in (False, True):
                with pytest.raises(openai.BadRequestError) as refused:
                    await sdk.chat.completions.create(**arguments, stream=stream)
                assert refused.value.body["param"] == param, (param, stream)  # type: ignore[index]
        # Structured output the backend cannot honour: refused by the generate service itself.
        for stream in (False, True):
            with pytest.raises(openai.UnprocessableEntityError) as unsupported:
                await sdk.chat.completions.create(
                    model="default", messages=hi, response_format={"type": "json_object"}, stream=stream
                )
            assert "response_format type 'json_object' is not supported" in unsupported.value.message
        assert len(backend.prompts) == asked_before  # no model was asked
        # Saying "no tools" is not asking for them.
        plain = await sdk.chat.completions.create(
            model="default", messages=hi, tools=[], tool_choice="none", response_format={"type": "text"}
        )
        assert plain.choices[0].message.content


async def test_chat_with_unknown_file_chat_is_404(gateway: tuple[RecordingBackend, str]) -> None:
    _, url = gateway
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "file_chat_id": "0" * 32},
        )
        assert reply.status_code == 404
        assert reply.json()["error"]["param"] == "file_chat_id"
        both = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "hi"}],
                "file_chat_id": "x",
                "knowledge_base": "kb",
            },
        )
        assert both.status_code == 422
        assert json.loads(both.text)["error"]["param"] == "file_chat_id"


async def test_history_is_capped_to_the_latest_messages(tmp_path) -> None:
    store = GatewayStore(f"sqlite:///{tmp_path / 'gw.db'}")
    store.create_schema()
    try:
        conversation = store.conversations.create()
        store.conversations.append(
            conversation.id,
            [NewMessage("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(4)],
        )
        body = ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": "new"}], "conversation_id": conversation.id}
        )
        turn = await prepare_turn(body, store, None, history_messages=2)
        assert [m.text() for m in turn.request.messages] == ["turn 2", "turn 3", "new"]
        none = await prepare_turn(body, store, None, history_messages=0)
        assert [m.text() for m in none.request.messages] == ["new"]
        assert none.user_message == "new" and none.extra_fields()["conversation_id"] == conversation.id
    finally:
        store.dispose()


def _chatchat_frames(body: str) -> list[dict]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_chatchat_conversation_id_stores_turns_and_supplies_history(
    gateway: tuple[RecordingBackend, str],
) -> None:
    """Chatchat clients name the conversation (uuid4 hex) and send no history: the gateway
    creates it on first use, stores each turn, and puts the stored turns in the prompt."""
    backend, url = gateway
    cid = "0123456789abcdef0123456789ABCDEF"  # case is not significant
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        first = _chatchat_frames(
            (await client.post("/chat/chat", json={"query": "我叫林青。", "conversation_id": cid})).text
        )
        assert first == [{"text": "answer 1", "message_id": first[0]["message_id"]}]
        second = _chatchat_frames(
            (
                await client.post(
                    "/chat/chat", json={"query": "我叫什么？", "conversation_id": cid, "stream": True}
                )
            ).text
        )
        assert "".join(frame["text"] for frame in second) == "answer 2"
        assert "我叫林青。" in _texts(backend.prompts[1]) and "answer 1" in _texts(backend.prompts[1])

        stored = (await client.get(f"/v1/conversations/{cid.lower()}")).json()
        assert [(m["role"], m["content"]) for m in stored["messages"]] == [
            ("user", "我叫林青。"),
            ("assistant", "answer 1"),
            ("user", "我叫什么？"),
            ("assistant", "answer 2"),
        ]
        assert stored["messages"][1]["id"] == first[0]["message_id"]

        # history_len 0: nothing stored goes along; an explicit history wins over the stored one.
        await client.post("/chat/chat", json={"query": "第三问", "conversation_id": cid, "history_len": 0})
        assert "我叫林青。" not in _texts(backend.prompts[2])
        history = [{"role": "user", "content": "外来的历史"}, {"role": "assistant", "content": "好"}]
        await client.post("/chat/chat", json={"query": "第四问", "conversation_id": cid, "history": history})
        assert "外来的历史" in _texts(backend.prompts[3]) and "我叫林青。" not in _texts(backend.prompts[3])

        bad = await client.post("/chat/chat", json={"query": "q", "conversation_id": "../etc"})
        assert bad.status_code == 422 and "32 hex digits" in bad.text
        # Without conversation_id nothing is stored anywhere.
        before = len((await client.get("/v1/conversations")).json()["data"])
        await client.post("/chat/chat", json={"query": "无会话"})
        assert len((await client.get("/v1/conversations")).json()["data"]) == before
