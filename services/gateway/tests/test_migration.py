"""Embedding-model migration end to end, over the real stack: the embed service serves the
bundled USE model (default, 512-d) and e5 (384-d) at once; a knowledge base moves from one to
the other while searches run in a loop, an upload and a delete land during the migration, and
the counts stay exact. Cancelling keeps the old collection; an unknown model is a 422.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio

from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc

from .stack import Stack, running_stack
from .test_knowledge_flow import DOCS, make_kb, wait_for_job

pytestmark = pytest.mark.asyncio(loop_scope="module")

USE_ID = "universal-sentence-encoder"
E5_ID = "multilingual-e5-small"
WARRANTY = b"Warranty. Every kettle carries a two year warranty covering the heating element.\n"
# Enough Chinese text that e5 needs several seconds on a small machine: a cancel lands mid-way.
SLOW_DOCS = {
    f"规章{index}.txt": (f"第{index}章。公司规定员工每年享有带薪年假，需提前两周申请。" * 12).encode()
    for index in range(16)
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(
        tmp_path_factory.mktemp("migration"),
        embed={"extra_models": ["e5"]},
        ingest={"migration_drop_delay_s": 1.0, "sweep_interval_s": 0.5},
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def retrieve(stack: Stack) -> AsyncIterator[retrieve_pb2_grpc.RetrieveServiceStub]:
    async with grpc.aio.insecure_channel(stack.addresses["retrieve"]) as channel:
        yield retrieve_pb2_grpc.RetrieveServiceStub(channel)


async def stats(stub: retrieve_pb2_grpc.RetrieveServiceStub, collection: str) -> retrieve_pb2.StatsResponse:
    reply: retrieve_pb2.StatsResponse = await stub.Stats(
        retrieve_pb2.StatsRequest(collection=collection), timeout=30
    )
    return reply


async def eventually_gone(stub: retrieve_pb2_grpc.RetrieveServiceStub, collection: str) -> None:
    deadline = time.monotonic() + 30
    while (await stats(stub, collection)).exists:
        assert time.monotonic() < deadline, f"collection {collection} was never dropped"
        await asyncio.sleep(0.2)


async def search(client: httpx.AsyncClient, kb: str, query: str) -> list[dict]:
    reply = await client.post(f"/v1/knowledge_bases/{kb}/search", json={"query": query, "top_k": 3})
    assert reply.status_code == 200, reply.text
    hits: list[dict] = reply.json()["data"]
    return hits


async def job_events(client: httpx.AsyncClient, job_id: str) -> list[dict]:
    """The job's server-sent events until its terminal one."""
    events = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=240) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    return events


async def file_chunks(client: httpx.AsyncClient, kb: str) -> dict[str, int]:
    files = (await client.get(f"/v1/knowledge_bases/{kb}/files")).json()["data"]
    return {entry["file_name"]: entry["chunks"] for entry in files}


async def test_migration_switches_model_and_collection_while_searches_answer(
    client: httpx.AsyncClient, stack: Stack, retrieve: retrieve_pb2_grpc.RetrieveServiceStub
) -> None:
    kb = await make_kb(client, stack)
    before = (await client.get(f"/v1/knowledge_bases/{kb}")).json()
    assert USE_ID in before["embed_model"] and before["collection"] == kb
    assert (await stats(retrieve, kb)).dimension == 512

    answered: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def keep_searching() -> None:
        while not stop.is_set():
            reply = await client.post(
                f"/v1/knowledge_bases/{kb}/search", json={"query": "refund within 30 days", "top_k": 3}
            )
            if reply.status_code != 200 or not reply.json()["data"]:
                failures.append(f"{reply.status_code} {reply.text[:300]}")
            else:
                answered.append(len(reply.json()["data"]))
            await asyncio.sleep(0.02)

    searching = asyncio.create_task(keep_searching())
    try:
        started = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": "e5"})
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["kind"] == "migrate" and E5_ID in job["embed_model"] and job["file_name"] == ""
        during = (await client.get(f"/v1/knowledge_bases/{kb}")).json()
        # Until the switch, the knowledge base still searches its old model's collection.
        assert during["collection"] == kb and USE_ID in during["embed_model"]
        assert during["migration_job"] in (job["id"], None)

        # An upload and a delete during the migration.
        upload = await client.post(
            f"/v1/knowledge_bases/{kb}/files", files=[("files", ("warranty.txt", WARRANTY))]
        )
        assert upload.status_code == 202, upload.text
        assert (await client.delete(f"/v1/knowledge_bases/{kb}/files/shipping.txt")).status_code == 204
        uploaded = await wait_for_job(client, upload.json()["jobs"][0]["id"], stack)
        assert uploaded["state"] == "succeeded", uploaded

        events = await job_events(client, job["id"])
        assert all(event["kind"] == "migrate" for event in events)
        progress = [event["progress"] for event in events]
        assert progress == sorted(progress) and events[-1]["state"] == "succeeded", events
        finished = await wait_for_job(client, job["id"], stack, timeout_s=240)
        assert finished["state"] == "succeeded", (
            finished["error"],
            Path(stack.worker_log).read_text()[-3000:],
        )
        assert finished["progress"] == 1.0
        await asyncio.sleep(0.3)  # a few searches after the switch too
    finally:
        stop.set()
        await searching
    assert not failures, failures[:5]
    assert len(answered) >= 5

    after = (await client.get(f"/v1/knowledge_bases/{kb}")).json()
    assert E5_ID in after["embed_model"]
    assert after["collection"] == f"{kb}__v2"
    assert (after["migrating_to"], after["migration_job"]) == (None, None)
    new = await stats(retrieve, f"{kb}__v2")
    assert (new.exists, new.dimension) == (True, 384)
    chunks = await file_chunks(client, kb)
    assert set(chunks) == {"refunds.md", "年假制度.txt", "warranty.txt"}
    assert new.points == after["chunk_count"] == sum(chunks.values()) > 0
    await eventually_gone(retrieve, kb)

    # Searches now embed with e5 and read the new collection: the upload is there, the delete is not.
    hits = await search(client, kb, "How long is the kettle warranty?")
    assert hits and hits[0]["file_name"] == "warranty.txt"
    assert "shipping.txt" not in {
        hit["file_name"] for hit in await search(client, kb, "express delivery Lyon")
    }
    assert (await search(client, kb, "员工每年有几天年假？"))[0]["file_name"] == "年假制度.txt"

    # Later uploads go to the new collection only, with the new model.
    again = await client.post(
        f"/v1/knowledge_bases/{kb}/files", files=[("files", ("shipping.txt", DOCS["shipping.txt"]))]
    )
    assert (await wait_for_job(client, again.json()["jobs"][0]["id"], stack))["state"] == "succeeded"
    total = (await client.get(f"/v1/knowledge_bases/{kb}")).json()["chunk_count"]
    assert (
        (await stats(retrieve, f"{kb}__v2")).points == total == sum((await file_chunks(client, kb)).values())
    )
    assert not (await stats(retrieve, kb)).exists


async def test_cancel_keeps_the_old_collection_and_drops_the_new_one(
    client: httpx.AsyncClient, stack: Stack, retrieve: retrieve_pb2_grpc.RetrieveServiceStub
) -> None:
    kb = await make_kb(client, stack, SLOW_DOCS)
    before = (await client.get(f"/v1/knowledge_bases/{kb}")).json()
    started = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": "e5"})
    assert started.status_code == 202, started.text
    job = started.json()

    second = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": "e5"})
    assert second.status_code == 409, second.text
    assert "already migrating" in second.json()["error"]["message"]

    cancelled = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    settled = await wait_for_job(client, job["id"], stack)
    assert settled["state"] == "cancelled"

    after = (await client.get(f"/v1/knowledge_bases/{kb}")).json()
    assert (after["embed_model"], after["collection"], after["chunk_count"]) == (
        before["embed_model"],
        kb,
        before["chunk_count"],
    )
    assert (after["migrating_to"], after["migration_job"]) == (None, None)
    await eventually_gone(retrieve, f"{kb}__v2")
    old = await stats(retrieve, kb)
    assert (old.exists, old.dimension, old.points) == (True, 512, before["chunk_count"])
    assert (await search(client, kb, "带薪年假"))[0]["file_name"].startswith("规章")

    # A later migration starts afresh (same shadow name, empty).
    retry = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": "e5"})
    assert retry.status_code == 202, retry.text
    assert (await client.post(f"/v1/jobs/{retry.json()['id']}/cancel")).status_code == 200


async def test_unknown_or_current_models_are_refused(client: httpx.AsyncClient, stack: Stack) -> None:
    kb = await make_kb(client, stack, {})
    unknown = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": "bge-m3"})
    assert unknown.status_code == 422, unknown.text
    message = unknown.json()["error"]["message"]
    assert "'bge-m3' is not served" in message and "ZHIKU_EMBED_EXTRA_MODELS" in message
    current = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": "use"})
    assert current.status_code == 409 and "already uses" in current.json()["error"]["message"]
    empty = await client.post(f"/v1/knowledge_bases/{kb}/migrate", json={"embed_model": ""})
    assert empty.status_code == 422
    missing = await client.post("/v1/knowledge_bases/no-such-kb/migrate", json={"embed_model": "e5"})
    assert missing.status_code == 404
    jobs = (await client.get(f"/v1/knowledge_bases/{kb}/jobs")).json()["data"]
    assert jobs == []  # nothing was started
