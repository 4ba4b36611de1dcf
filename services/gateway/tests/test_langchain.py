"""LangChain's ``ChatOpenAI`` pointed at the gateway, unchanged: plain and knowledge-base chat,
invoke and stream. LangChain brings its own HTTP client (the ``openai`` SDK underneath), so the
gateway runs behind a real uvicorn (the shared stack); the async API is used because the
server shares this test's event loop.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

HANDBOOK = (
    b"Leave policy. Employees get fifteen days of paid annual leave per year. "
    b"Annual leave must be requested from your manager two weeks in advance.\n"
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("langchain")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kb(stack: Stack) -> str:
    """A knowledge base holding the handbook, indexed (Chatchat's upload waits for its job)."""
    name = f"lc-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        created = await client.post("/v1/knowledge_bases", json={"name": name})
        assert created.status_code == 201, created.text
        uploaded = await client.post(
            "/knowledge_base/upload_docs",
            data={"knowledge_base_name": name},
            files=[("files", ("handbook.txt", HANDBOOK))],
        )
        assert uploaded.json()["data"]["failed_files"] == {}, uploaded.text
    return name


def chat_model(stack: Stack, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{stack.url}/v1", api_key=SecretStr("unused"), max_retries=0, timeout=60, **options
    )


async def test_plain_invoke_and_stream(stack: Stack) -> None:
    llm = chat_model(stack, model="default", temperature=0, max_tokens=16)
    messages = [SystemMessage("Be brief."), HumanMessage("Say hello.")]
    reply = await llm.ainvoke(messages)
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0

    chunks = [chunk async for chunk in llm.astream(messages)]
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert "".join(str(chunk.content) for chunk in chunks) == reply.content


async def test_knowledge_base_chat_by_extra_body_and_by_model(stack: Stack, kb: str) -> None:
    question = [HumanMessage("How many days of annual leave do employees get?")]
    by_body = await chat_model(stack, model="default", extra_body={"knowledge_base": kb, "top_k": 2}).ainvoke(
        question
    )
    assert "fifteen days" in str(by_body.content)

    by_model = chat_model(stack, model=f"kb:{kb}")
    assert (await by_model.ainvoke(question)).content == by_body.content
    streamed = "".join([str(chunk.content) async for chunk in by_model.astream(question)])
    assert streamed == by_body.content


async def test_errors_surface_as_openai_errors(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        await chat_model(stack, model="kb:no-such-kb").ainvoke([HumanMessage("hi")])
