"""Ingestion jobs over the public API, on the real stack: progress events, the jobs list,
cancel, identical re-uploads as no-ops, ``override`` and ``reindex`` swapping a file's chunks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXT = "\n\n".join(
    f"第{i}节：上传的文件先解析，再切分成块，编码后写入向量库。本节的编号是{i}，用于检验检索。"
    for i in range(40)
).encode()
STAGES = ["queued", "parsing", "embedding", "indexing", "succeeded"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("jobs")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        yield client


async def _kb(client: httpx.AsyncClient) -> str:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    (await client.post("/v1/knowledge_bases", json={"name": name})).raise_for_status()
    return name


async def _upload(client: httpx.AsyncClient, kb: str, content: bytes = TEXT, **form: str) -> dict:
    reply = await client.post(
        f"/v1/knowledge_bases/{kb}/files", files=[("files", ("doc.txt", content, "text/plain"))], data=form
    )
    assert reply.status_code == 202, reply.text
    (job,) = reply.json()["jobs"]
    return job


async def _events(client: httpx.AsyncClient, job_id: str) -> list[dict]:
    events = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def _finished(client: httpx.AsyncClient, job_id: str) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


async def test_progress_streams_as_events_until_the_job_ends(client: httpx.AsyncClient) -> None:
    kb = await _kb(client)
    job = await _upload(client, kb)
    assert job["state"] == "queued" and job["unchanged"] is False
    events = await _events(client, job["id"])
    assert events[-1]["state"] == "succeeded" and events[-1]["progress"] == 1.0
    assert events[-1]["chunks"] > 1
    stages = [event["stage"] for event in events]
    assert stages == sorted(stages, key=STAGES.index)  # never backwards
    progress = [event["progress"] for event in events]
    assert progress == sorted(progress)
    assert len(events) == len({(e["stage"], e["progress"]) for e in events})  # only changes are sent
    # A finished job's stream is its final state, once.
    assert [event["state"] for event in await _events(client, job["id"])] == ["succeeded"]


async def test_identical_reupload_is_a_noop_and_override_or_reindex_swap_the_chunks(
    client: httpx.AsyncClient,
) -> None:
    kb = await _kb(client)
    first = await _finished(client, (await _upload(client, kb))["id"])
    again = await _upload(client, kb)
    assert again == {"id": first["id"], "file_name": "doc.txt", "state": "succeeded", "unchanged": True}
    forced = await _upload(client, kb, override="true")
    assert forced["unchanged"] is False and forced["id"] != first["id"]
    forced_done = await _finished(client, forced["id"])
    assert forced_done["chunks"] == first["chunks"]
    reply = await client.post(
        f"/v1/knowledge_bases/{kb}/files/doc.txt/reindex", json={"chunk_size": 60, "chunk_overlap": 10}
    )
    assert reply.status_code == 202, reply.text
    (reindex,) = reply.json()["jobs"]
    smaller = await _finished(client, reindex["id"])
    assert (smaller["state"], smaller["chunk_size"], smaller["chunk_overlap"]) == ("succeeded", 60, 10)
    assert smaller["chunks"] > first["chunks"]
    (entry,) = (await client.get(f"/v1/knowledge_bases/{kb}/files")).json()["data"]
    assert entry["file_name"] == "doc.txt" and entry["chunks"] == smaller["chunks"]
    assert entry["job_id"] == reindex["id"] and entry["uploaded_at"] > 0
    summary = (await client.get(f"/v1/knowledge_bases/{kb}")).json()
    assert summary["chunk_count"] == smaller["chunks"]  # the old generation is gone
    hits = (
        await client.post(f"/v1/knowledge_bases/{kb}/search", json={"query": "本节的编号是7", "top_k": 3})
    ).json()
    assert any("编号是7" in hit["text"] for hit in hits["data"])
    listed = (await client.get(f"/v1/knowledge_bases/{kb}/jobs")).json()["data"]
    assert [job["id"] for job in listed] == [reindex["id"], forced["id"], first["id"]]


async def test_cancel_and_bad_requests(client: httpx.AsyncClient) -> None:
    kb = await _kb(client)
    job = await _finished(client, (await _upload(client, kb))["id"])
    cancelled = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "succeeded"  # already done
    unknown = str(uuid.uuid4())
    for method, path in [
        ("POST", f"/v1/jobs/{unknown}/cancel"),
        ("GET", f"/v1/jobs/{unknown}/events"),
        ("GET", "/v1/knowledge_bases/no-such-kb/jobs"),
        ("POST", f"/v1/knowledge_bases/{kb}/files/missing.txt/reindex"),
    ]:
        reply = await client.request(method, path)
        assert reply.status_code == 404, (path, reply.text)
    bad = await client.post(
        f"/v1/knowledge_bases/{kb}/files",
        files=[("files", ("x.txt", b"hello", "text/plain"))],
        data={"splitter": "sentences"},
    )
    assert bad.status_code == 422 and "splitter" in bad.text
    assert (await client.get("/v1/jobs/not-a-uuid/events")).status_code in (400, 422)
