"""Several models at once, end to end: one generate service serving the extractive default and
two named ``openai`` models, each on its own OpenAI-protocol server (the repo's fake, on
loopback), behind the real gateway; the real ``openai`` SDK lists them and chooses among them.
What each fake server received proves where each request went.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest
import pytest_asyncio

from testing.fake_openai import FakeOpenAI, running, script_tokens

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOTES = b"The Hanseatic League was founded in 1356 by merchant guilds of Luebeck and Hamburg.\n"
REWRITTEN = "When was the Hanseatic League founded?"


@dataclass
class Served:
    stack: Stack
    qwen: FakeOpenAI  # the answers model's upstream
    tiny: FakeOpenAI  # the small model's upstream, which also rewrites follow-ups
    kb: str


def entry(base_url: str, upstream_model: str, window: int) -> dict[str, object]:
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
    async with (
        running(FakeOpenAI(["Answer ", "from ", "Qwen."], model="Qwen2.5-7B-Instruct")) as qwen,
        running(FakeOpenAI(script_tokens(REWRITTEN), model="Qwen2.5-0.5B-Instruct")) as tiny,
    ):
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
        async with running_stack(tmp_path_factory.mktemp("named-models"), generate=generate) as stack:
            kb = f"hansa-{uuid.uuid4().hex[:6]}"
            async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
                assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
                uploaded = await client.post(
                    "/knowledge_base/upload_docs",
                    data={"knowledge_base_name": kb},
                    files=[("files", ("hansa.txt", NOTES))],
                )
                assert uploaded.json()["data"]["failed_files"] == {}, uploaded.text
            yield Served(stack, qwen, tiny, kb)


def sdk(served: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{served.stack.url}/v1", api_key="unused", max_retries=0, timeout=60)


def reset(served: Served) -> None:
    served.qwen.calls.clear()
    served.tiny.calls.clear()


async def test_models_list_names_every_model_with_its_capabilities(served: Served) -> None:
    async with sdk(served) as client:
        listed = {model.id: model.model_dump() for model in (await client.models.list()).data}
    assert {"extractive", "qwen", "tiny", f"kb:{served.kb}"} <= set(listed)
    qwen, tiny, default = listed["qwen"], listed["tiny"], listed["extractive"]
    assert (qwen["object"], qwen["owned_by"], qwen["backend"]) == ("model", "zhiku", "openai")
    assert (qwen["context_length"], tiny["context_length"]) == (32768, 4096)
    assert qwen["capabilities"] == {"chat": True, "tools": False} == default["capabilities"]
    assert default["default"] is True and qwen["default"] is False and tiny["default"] is False
    assert next(iter(listed)) == "extractive"  # the default model first


async def test_each_request_reaches_the_model_it_names(served: Served) -> None:
    reset(served)
    question = [{"role": "user", "content": "Say hello."}]
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
    question = [{"role": "user", "content": "Say hello."}]
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
    history = [
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
