"""Answers users can trust, over the real stack and real data (CMRC 2018 passages): abstention
outside the knowledge base, follow-ups searched with their earlier subject, no sentence quoted
twice, and a sentence the model invented reported as unsupported.

The stack is the embedded default (extractive answers) with the fast ``use`` embedder; the last
test puts the generate service on the ``openai`` backend against the OpenAI-protocol test server,
scripted to cite a passage for a sentence that is in none."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from testing.fake_openai import FakeOpenAI, running

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

EVALDATA = Path(
    os.environ.get("ZHIKU_EVALDATA") or Path(__file__).resolve().parents[4] / "shared" / "evaldata"
)
# The first twelve CMRC articles: two railways, a game, footballers, a musician...
ARTICLES = 12


def cmrc() -> dict[str, dict]:
    data = json.loads((EVALDATA / "cmrc2018" / "cmrc2018_dev.squad.json").read_text(encoding="utf-8"))
    return {article["id"]: article for article in data["data"]}


async def ingest(client: httpx.AsyncClient, kb: str, files: dict[str, str], **form: str) -> None:
    assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
    uploads = [("files", (name, text.encode(), "text/plain")) for name, text in files.items()]
    reply = await client.post(f"/v1/knowledge_bases/{kb}/files", files=uploads, data=form)
    assert reply.status_code == 202, reply.text
    pending = {job["id"] for job in reply.json()["jobs"]}
    deadline = time.monotonic() + 180
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert job["state"] != "failed", job
            if job["state"] == "succeeded":
                pending.discard(job_id)
        await asyncio.sleep(0.2)
    assert not pending, "ingestion did not finish"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, dict]]:
    articles = cmrc()
    async with (
        running_stack(tmp_path_factory.mktemp("grounded")) as running_,
        httpx.AsyncClient(base_url=running_.url, timeout=120) as client,
    ):
        files = {
            f"{article_id}.txt": articles[article_id]["paragraphs"][0]["context"]
            for article_id in list(articles)[:ARTICLES]
        }
        await ingest(client, "cmrc", files)
        yield running_, articles


async def ask(client: httpx.AsyncClient, messages: list[dict], **extra: object) -> dict:
    reply = await client.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": messages, "knowledge_base": "cmrc", **extra},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


async def test_a_question_about_an_article_outside_the_knowledge_base_is_abstained(stack) -> None:
    running_, articles = stack
    outside = next(a for a in list(articles.values())[ARTICLES:] if a["title"] == "我的暑假")
    question = outside["paragraphs"][0]["qas"][0]["question"]
    async with httpx.AsyncClient(base_url=running_.url, timeout=120) as client:
        answer = await ask(client, [user(question)])
        assert answer["abstained"] is True
        assert answer["choices"][0]["message"]["content"] == "根据已知信息无法回答该问题。"
        assert answer["citations"] and not any(c["cited"] or c["supported"] for c in answer["citations"])
        inside = await ask(client, [user("广茂铁路全长多少公里？")])
        assert inside["abstained"] is False and "364.6公里" in inside["choices"][0]["message"]["content"]
        streamed = await client.post(
            "/v1/chat/completions",
            json={"messages": [user(question)], "knowledge_base": "cmrc", "stream": True},
        )
        first = json.loads(streamed.text.split("\n\n")[0].removeprefix("data: "))
        assert first["abstained"] is True and "citations" in first


async def test_a_follow_up_is_searched_with_its_earlier_subject(stack) -> None:
    """Six of the twelve articles are about footballers: "他" alone could be any of them."""
    running_, _ = stack
    first = "赵鹏的职业是什么？"
    follow_up = "他在哪年入选国家队？"
    async with httpx.AsyncClient(base_url=running_.url, timeout=120) as client:
        earlier = await ask(client, [user(first)])
        history = [user(first), {"role": "assistant", "content": earlier["choices"][0]["message"]["content"]}]
        rewritten = await ask(client, [*history, user(follow_up)])
        assert "赵鹏" in rewritten["retrieval_query"] and rewritten["retrieval_query"].endswith(follow_up)
        assert rewritten["citations"][0]["file_name"] == "DEV_5.txt"
        assert {c["file_name"] for c in rewritten["citations"] if c["cited"]} == {"DEV_5.txt"}
        last_message_only = await ask(client, [*history, user(follow_up)], rewrite=False)
        assert last_message_only["retrieval_query"] == follow_up


async def test_overlapping_chunks_never_make_an_answer_repeat_a_sentence(stack) -> None:
    """Small chunks with a large overlap put every sentence in two or three chunks."""
    running_, articles = stack
    context = articles["DEV_2"]["paragraphs"][0]["context"]
    async with httpx.AsyncClient(base_url=running_.url, timeout=120) as client:
        await ingest(client, "overlap", {"guangmao.txt": context}, chunk_size="80", chunk_overlap="60")
        reply = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [user("广茂铁路全长多少公里，由哪家公司管理运营？")],
                "knowledge_base": "overlap",
                "top_k": 6,
            },
        )
        answer = reply.json()["choices"][0]["message"]["content"]
        quoted = [piece.strip() for piece in re.split(r"\[\d+\]", answer) if piece.strip()]
        assert len(quoted) >= 2 and len(quoted) == len(set(quoted)), answer


@pytest_asyncio.fixture(loop_scope="module")
async def scripted(tmp_path: Path) -> AsyncIterator[Stack]:
    tokens = [
        "广茂铁路",
        "全长",
        "364.6公里",
        "[1]。",
        "这条铁路",
        "每年",
        "运送",
        "九百万名",
        "游客",
        "前往",
        "海南",
        "[1]。",
    ]
    async with (
        running(FakeOpenAI(tokens)) as fake,
        running_stack(
            tmp_path,
            generate={
                "backend": "openai",
                "openai_base_url": fake.base_url,
                "openai_model": "fake-model",
                "openai_api_key": "test-key",
                "openai_max_retries": 0,
            },
        ) as running_,
    ):
        yield running_


async def test_a_sentence_in_no_passage_is_unsupported(scripted: Stack, stack) -> None:
    _, articles = stack
    async with httpx.AsyncClient(base_url=scripted.url, timeout=120) as client:
        one_chunk = {"DEV_2.txt": articles["DEV_2"]["paragraphs"][0]["context"]}
        await ingest(client, "cmrc", one_chunk, chunk_size="2000", chunk_overlap="0")
        answer = await ask(client, [user("广茂铁路全长多少公里？")])
    text = answer["choices"][0]["message"]["content"]
    [planted] = answer["unsupported"]
    assert planted["text"] == "这条铁路每年运送九百万名游客前往海南[1]。"
    assert text[planted["start"] : planted["end"]] == planted["text"]
    cited = [c for c in answer["citations"] if c["cited"]]
    assert [c["index"] for c in cited] == [1] and cited[0]["supported"]  # the true sentence is backed
    assert answer["abstained"] is False
