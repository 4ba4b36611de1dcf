"""Parent-child chunks through the real stack: children are matched, the prompt the model
receives holds each parent section once, citations and search hits point at the child with
its parent; the mode is set per knowledge base and overridden per upload.

The model is the scripted OpenAI-protocol server, which records the exact request the
generate service sent it: that is where the prompt's passages are checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from testing.fake_openai import FakeOpenAI, running

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

PARKING = (
    "Visitors park in garage B on level two of the north building. "
    "Visitor parking is free for the first three hours of each day. "
    "After three hours the garage charges four yuan for every further hour. "
    "The garage gate code for visitors is 4417 and changes every month. "
    "Bicycles are kept in the covered shed next to the main entrance."
)
CANTEEN = (
    "The canteen opens at half past eleven and closes at two in the afternoon. "
    "Vegetarian dishes are served at the counter by the windows. "
    "Staff pay with their badge and visitors pay at the cashier."
)
HANDBOOK = f"# Handbook\n\n## Parking\n\n{PARKING}\n\n## Canteen\n\n{CANTEEN}\n".encode()
SPLIT = {"chunk_size": "100", "chunk_overlap": "0"}


@dataclass
class Env:
    stack: Stack
    fake: FakeOpenAI
    client: httpx.AsyncClient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with running(FakeOpenAI(["Visitors park in garage B [1]."], model="fake-model")) as fake:
        generate = {
            "backend": "openai",
            "openai_base_url": fake.base_url,
            "openai_model": "fake-model",
            "openai_api_key": "test-key",
            "openai_max_retries": 0,
        }
        async with (
            running_stack(tmp_path_factory.mktemp("pc"), generate=generate) as stack,
            httpx.AsyncClient(base_url=stack.url, timeout=120) as client,
        ):
            yield Env(stack, fake, client)


async def settled(env: Env, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        job = (await env.client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, Path(env.stack.worker_log).read_text()
        await asyncio.sleep(0.2)


async def make_kb(env: Env, name: str, **settings: Any) -> dict[str, Any]:
    created = await env.client.post("/v1/knowledge_bases", json={"name": name, **settings})
    assert created.status_code == 201, created.text
    return created.json()


async def upload(env: Env, kb: str, **form: str) -> dict[str, Any]:
    sent = await env.client.post(
        f"/v1/knowledge_bases/{kb}/files",
        files=[("files", ("handbook.md", HANDBOOK))],
        data={**SPLIT, **form},
    )
    assert sent.status_code == 202, sent.text
    job = await settled(env, sent.json()["jobs"][0]["id"])
    assert job["state"] == "succeeded", job
    return job


async def search(env: Env, kb: str, query: str) -> list[dict[str, Any]]:
    found = await env.client.post(f"/v1/knowledge_bases/{kb}/search", json={"query": query, "top_k": 8})
    assert found.status_code == 200, found.text
    hits: list[dict[str, Any]] = found.json()["data"]
    return hits


async def test_chat_prompt_gets_each_parent_once_and_cites_the_child(env: Env) -> None:
    kb = await make_kb(env, "pc-kb", parent_child=True, parent_chunk_size=600)
    assert (kb["parent_child"], kb["parent_chunk_size"]) == (True, 600)
    job = await upload(env, "pc-kb")
    assert job["parent_chunk_size"] == 600
    assert job["chunks"] >= 6  # children of about 100 characters, two parents

    hits = await search(env, "pc-kb", "Where do visitors park their car?")
    parking = [hit for hit in hits if hit["parent"] and "garage" in hit["parent"]["text"]]
    assert len(parking) >= 2, hits  # several children of the parking section came back
    assert len({hit["parent"]["id"] for hit in parking}) == 1
    for hit in parking:
        assert len(hit["text"]) <= 100 and hit["text"] in hit["parent"]["text"]
        assert hit["parent"]["heading"] == "Handbook > Parking"
        assert PARKING in hit["parent"]["text"]

    env.fake.calls.clear()
    answer = await env.client.post(
        "/v1/chat/completions",
        json={
            "model": "fake-model",
            "knowledge_base": "pc-kb",
            "top_k": 8,
            "messages": [{"role": "user", "content": "Where do visitors park their car?"}],
        },
    )
    assert answer.status_code == 200, answer.text
    prompt = "\n".join(str(m.get("content")) for m in env.fake.calls[-1].body["messages"])
    # The whole parent section reached the model, once, although several children matched.
    assert prompt.count(PARKING) == 1
    assert prompt.count("The garage gate code for visitors is 4417") == 1
    citations = answer.json()["citations"]
    parents = [c["parent_id"] for c in citations]
    assert len(parents) == len(set(parents)) >= 1
    first = citations[0]
    assert first["chunk_id"] == parking[0]["id"] and first["text"] == parking[0]["text"]
    assert first["heading"] == "Handbook > Parking"
    assert "4417" not in first["text"] or PARKING not in first["text"]  # the child, not the parent


async def test_plain_knowledge_base_sends_the_chunk_itself(env: Env) -> None:
    kb = await make_kb(env, "plain-kb")
    assert (kb["parent_child"], kb["parent_chunk_size"]) == (False, 0)
    job = await upload(env, "plain-kb")
    assert job["parent_chunk_size"] == 0
    hits = await search(env, "plain-kb", "Where do visitors park their car?")
    assert hits and all(hit["parent"] is None for hit in hits)
    env.fake.calls.clear()
    answer = await env.client.post(
        "/v1/chat/completions",
        json={
            "model": "fake-model",
            "knowledge_base": "plain-kb",
            "top_k": 1,
            "messages": [{"role": "user", "content": "Where do visitors park their car?"}],
        },
    )
    assert answer.status_code == 200, answer.text
    prompt = "\n".join(str(m.get("content")) for m in env.fake.calls[-1].body["messages"])
    assert hits[0]["text"] in prompt and PARKING not in prompt
    assert "parent_id" not in answer.json()["citations"][0]


async def test_an_upload_overrides_the_knowledge_base_setting(env: Env) -> None:
    await make_kb(env, "override-on")
    job = await upload(env, "override-on", parent_child="true", parent_chunk_size="400")
    assert job["parent_chunk_size"] == 400
    hits = await search(env, "override-on", "gate code")
    assert hits and all(hit["parent"] and len(hit["parent"]["text"]) <= 400 for hit in hits)

    await make_kb(env, "override-off", parent_child=True)
    job = await upload(env, "override-off", parent_child="false")
    assert job["parent_chunk_size"] == 0
    assert all(hit["parent"] is None for hit in await search(env, "override-off", "gate code"))

    # Reindexing keeps the file's last mode unless told otherwise.
    file_url = "/v1/knowledge_bases/override-off/files/handbook.md/reindex"
    again = await env.client.post(file_url, json={"parent_child": True})
    assert again.status_code == 202, again.text
    job = await settled(env, again.json()["jobs"][0]["id"])
    assert (job["state"], job["parent_chunk_size"]) == ("succeeded", 1500)


async def test_bad_parent_sizes_are_clear_client_errors(env: Env) -> None:
    refused = await env.client.post(
        "/v1/knowledge_bases", json={"name": "bad-parents", "parent_child": True, "parent_chunk_size": 50}
    )
    assert refused.status_code == 422, refused.text
    assert "parent_chunk_size must be between 100 and 8000" in refused.text
    await make_kb(env, "small-parents")
    sent = await env.client.post(
        "/v1/knowledge_bases/small-parents/files",
        files=[("files", ("handbook.md", HANDBOOK))],
        data={"chunk_size": "300", "parent_child": "true", "parent_chunk_size": "200"},
    )
    assert sent.status_code == 422, sent.text
    assert "must be larger than chunk_size (300)" in sent.text
    assert (await env.client.get("/healthz")).status_code == 200
