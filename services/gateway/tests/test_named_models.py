"""Several models at once, end to end: one generate service serving the extractive default and
two named ``openai`` models, plus a second generate service serving one model of its own (as
the chart's one Deployment per model does), each model on its own OpenAI-protocol server (the
repo's fake, on loopback), behind the real gateway; the real ``openai`` SDK lists them and
chooses among them. What each fake server received proves where each request went.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from services.gateway.app import create_app
from services.generate.config import GenerateSettings
from services.generate.server import build_spec as build_generate
from testing.fake_openai import FakeOpenAI, running, script_tokens

from .stack import Stack, running_stack
from .support import gateway_settings, running_service
from .support import served as serving

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOTES = b"The Hanseatic League was founded in 1356 by merchant guilds of Luebeck and Hamburg.\n"
REWRITTEN = "When was the Hanseatic League founded?"


@dataclass
class Served:
    stack: Stack
    qwen: FakeOpenAI  # the answers model's upstream
    tiny: FakeOpenAI  # the small model's upstream, which also rewrites follow-ups
    solo: FakeOpenAI  # the upstream of the model served by a generate service of its own
    solo_addr: str
    kb: str


def entry(base_url: str, upstream_model: str, window: int) -> dict[str, Any]:
    """One ``ZHIKU_GENERATE_MODELS`` entry (``GenerateSettings.models`` holds them as such)."""
    return {
        "backend": "openai",
        "openai_base_url": base_url,
        "openai_api_key": "test-key",
        "openai_model": upstream_model,
        "openai_max_retries": 0,
        "openai_context_window": window,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    solo_fake = FakeOpenAI(script_tokens(REWRITTEN), model="solo-upstream")
    async with (
        running(FakeOpenAI(["Answer ", "from ", "Qwen."], model="Qwen2.5-7B-Instruct")) as qwen,
        running(FakeOpenAI(script_tokens(REWRITTEN), model="Qwen2.5-0.5B-Instruct")) as tiny,
        running(solo_fake) as solo,
    ):
        # A generate service of its own for "solo": its top-level model, named so.
        solo_settings = GenerateSettings(
            **entry(solo.base_url, "solo-upstream", 8192), served_model_name="solo", metrics_port=0
        )
        # The fakes answer whatever is asked; the grounded abstention check is off so every
        # knowledge-base question reaches the model.
        generate = {
            "abstain_below": 0.0,
            "models": {
                "qwen": entry(qwen.base_url, "Qwen2.5-7B-Instruct", 32768),
                "tiny": entry(tiny.base_url, "Qwen2.5-0.5B-Instruct", 4096),
            },
            "rewrite_model": "tiny",
        }
        async with running_service(build_generate(solo_settings), solo_settings) as own:
            solo_addr = f"127.0.0.1:{own.port}"
            async with running_stack(
                tmp_path_factory.mktemp("named-models"),
                generate=generate,
                generate_model_addrs={"solo": solo_addr},
            ) as stack:
                kb = f"hansa-{uuid.uuid4().hex[:6]}"
                async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
                    assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
                    uploaded = await client.post(
                        "/knowledge_base/upload_docs",
                        data={"knowledge_base_name": kb},
                        files=[("files", ("hansa.txt", NOTES))],
                    )
                    assert uploaded.json()["data"]["failed_files"] == {}, uploaded.text
                yield Served(stack, qwen, tiny, solo, solo_addr, kb)


def sdk(served: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{served.stack.url}/v1", api_key="unused", max_retries=0, timeout=60)


def reset(served: Served) -> None:
    for fake in (served.qwen, served.tiny, served.solo):
        fake.calls.clear()


async def test_models_list_names_every_model_with_its_capabilities(served: Served) -> None:
    async with sdk(served) as client:
        listed = {model.id: model.model_dump() for model in (await client.models.list()).data}
    assert {"extractive", "qwen", "tiny", "solo", f"kb:{served.kb}"} <= set(listed)
    qwen, tiny, default = listed["qwen"], listed["tiny"], listed["extractive"]
    assert (qwen["object"], qwen["owned_by"], qwen["backend"]) == ("model", "zhiku", "openai")
    assert (qwen["context_length"], tiny["context_length"]) == (32768, 4096)
    # An OpenAI-protocol upstream passes tools through; the extractive backend cannot call them.
    assert qwen["capabilities"] == {"chat": True, "tools": True}
    assert default["capabilities"] == {"chat": True, "tools": False}
    assert default["default"] is True and qwen["default"] is False and tiny["default"] is False
    assert next(iter(listed)) == "extractive"  # the default model first
    # The model served by a generate service of its own is listed beside the others.
    assert (listed["solo"]["backend"], listed["solo"]["context_length"]) == ("openai", 8192)
    assert listed["solo"]["default"] is False


async def test_each_request_reaches_the_model_it_names(served: Served) -> None:
    reset(served)
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
    async with sdk(served) as client:
        answer = await client.chat.completions.create(model="qwen", messages=question)
        stream = await client.chat.completions.create(model="tiny", messages=question, stream=True)
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        default = await client.chat.completions.create(model="default", messages=question)
    assert answer.model == "qwen" and answer.choices[0].message.content == "Answer from Qwen."
    assert streamed == REWRITTEN
    assert default.model == "default" and "Qwen" not in (default.choices[0].message.content or "")
    assert [call.body["model"] for call in served.qwen.calls] == ["Qwen2.5-7B-Instruct"]
    assert [call.body["model"] for call in served.tiny.calls] == ["Qwen2.5-0.5B-Instruct"]
    assert served.qwen.calls[0].body["messages"][-1]["content"].endswith("Say hello.")


async def test_an_unknown_model_is_a_404_naming_it(served: Served) -> None:
    reset(served)
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
    async with sdk(served) as client:
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as raised:
                await client.chat.completions.create(model="gpt-4o", messages=question, stream=stream)
            error = raised.value.body
            assert isinstance(error, dict) and "'gpt-4o' is not served here" in error["message"]
            assert "available: extractive, qwen, tiny" in error["message"]
    assert served.qwen.calls == [] and served.tiny.calls == []


async def test_follow_ups_are_rewritten_by_the_rewrite_model_and_answered_by_the_named_one(
    served: Served,
) -> None:
    reset(served)
    history: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about the Hanseatic League."},
        {"role": "assistant", "content": "A league of merchant guilds."},
        {"role": "user", "content": "When was it founded?"},
    ]
    async with sdk(served) as client:
        answer = await client.chat.completions.create(
            model="qwen", messages=history, extra_body={"knowledge_base": served.kb}
        )
    extra = answer.model_extra or {}
    assert extra["retrieval_query"] == REWRITTEN  # tiny's condensed question was searched
    assert "founded in 1356" in extra["citations"][0]["text"]
    (rewrite,) = served.tiny.calls
    assert "Last question: When was it founded?" in rewrite.body["messages"][-1]["content"]
    (answering,) = served.qwen.calls
    assert "founded in 1356" in answering.body["messages"][-1]["content"]  # the passage, to qwen
    assert answer.choices[0].message.content == "Answer from Qwen."


async def test_chatchat_model_name_routes_the_same_way(served: Served) -> None:
    reset(served)
    async with httpx.AsyncClient(base_url=served.stack.url, timeout=60) as client:
        reply = await client.post("/chat/chat", json={"query": "Say hello.", "model_name": "qwen"})
    assert reply.status_code == 200
    assert '"text": "Answer from Qwen."' in reply.text
    assert len(served.qwen.calls) == 1 and served.tiny.calls == []


async def test_a_model_with_a_generate_service_of_its_own_is_reached_at_its_address(served: Served) -> None:
    reset(served)
    async with sdk(served) as client:
        answer = await client.chat.completions.create(
            model="solo", messages=[{"role": "user", "content": "Say hello."}]
        )
    assert answer.choices[0].message.content == REWRITTEN
    assert [call.body["model"] for call in served.solo.calls] == ["solo-upstream"]
    assert served.qwen.calls == [] and served.tiny.calls == []
    async with httpx.AsyncClient(base_url=served.stack.url, timeout=30) as client:
        ready = (await client.get("/readyz")).json()
    assert ready["services"]["generate:solo"] == "serving"


async def test_the_gateway_sends_follow_ups_to_the_rewrite_model_at_its_own_address(served: Served) -> None:
    """ZHIKU_GATEWAY_REWRITE_MODEL names a model served at an address of its own."""
    reset(served)
    settings = gateway_settings(
        served.stack.addresses, generate_model_addrs={"solo": served.solo_addr}, rewrite_model="solo"
    )
    history: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about the Hanseatic League."},
        {"role": "assistant", "content": "A league of merchant guilds."},
        {"role": "user", "content": "When was it founded?"},
    ]
    async with serving(create_app(settings)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = await client.chat.completions.create(
            model="qwen", messages=history, extra_body={"knowledge_base": served.kb}
        )
        await client.close()
    assert (answer.model_extra or {})["retrieval_query"] == REWRITTEN
    (rewrite,) = served.solo.calls
    assert "Last question: When was it founded?" in rewrite.body["messages"][-1]["content"]
    assert served.tiny.calls == [] and len(served.qwen.calls) == 1
