"""The public API end to end over the real stack: knowledge bases, uploads and jobs, search,
grounded chat (with the ``openai`` SDK, unchanged), citations and downloads, models, readiness.

One stack serves the module (starting the worker process dominates the cost); each test makes
its own knowledge base, so tests do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from .stack import INGEST_MAX_FILE_MB, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCS: dict[str, bytes] = {
    "refunds.md": (
        b"# Refund policy\n\nCustomers can request a full refund within 30 days of purchase. "
        b"Refunds are paid back to the original payment method within 5 business days.\n"
    ),
    "shipping.txt": (
        b"Shipping. Orders ship from our warehouse in Lyon. Standard delivery takes 3 to 7 days. "
        b"Express delivery arrives the next day.\n"
    ),
    "年假制度.txt": "年假制度。员工每年享有十五天带薪年假。年假需要提前两周向主管申请。\n".encode(),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def unique_name(prefix: str = "kb") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_for_job(client: httpx.AsyncClient, job_id: str, stack: Stack, timeout_s: float = 90) -> dict:
    """Poll the job until it settles; the deadline only bounds a hung test."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job} did not settle; worker log:\n{Path(stack.worker_log).read_text()}"
            )
        await asyncio.sleep(0.2)


async def make_kb(client: httpx.AsyncClient, stack: Stack, files: dict[str, bytes] | None = None) -> str:
    """A knowledge base holding ``files`` (default: DOCS), every job succeeded."""
    name = unique_name()
    created = await client.post("/v1/knowledge_bases", json={"name": name, "description": "test"})
    assert created.status_code == 201, created.text
    files = DOCS if files is None else files
    if files:
        upload = await client.post(
            f"/v1/knowledge_bases/{name}/files",
            files=[("files", (file_name, content)) for file_name, content in files.items()],
        )
        assert upload.status_code == 202, upload.text
        for job in upload.json()["jobs"]:
            settled = await wait_for_job(client, job["id"], stack)
            assert settled["state"] == "succeeded", settled
    return name


async def test_knowledge_base_lifecycle(client: httpx.AsyncClient) -> None:
    name = unique_name("员工手册")
    created = await client.post("/v1/knowledge_bases", json={"name": name, "description": "HR docs"})
    assert created.status_code == 201
    kb = created.json()
    assert set(kb) == {
        "name",
        "description",
        "file_count",
        "chunk_count",
        "embed_model",
        "created_at",
        "parent_child",
        "parent_chunk_size",
        "collection",
        "migrating_to",
        "migration_job",
    }
    assert (kb["name"], kb["description"], kb["file_count"], kb["chunk_count"]) == (name, "HR docs", 0, 0)
    assert (kb["collection"], kb["migrating_to"], kb["migration_job"]) == (name, None, None)
    assert kb["created_at"] > 0

    duplicate = await client.post("/v1/knowledge_bases", json={"name": name})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "already_exists"

    listed = (await client.get("/v1/knowledge_bases")).json()["data"]
    assert name in [entry["name"] for entry in listed]
    assert (await client.get(f"/v1/knowledge_bases/{name}")).json()["description"] == "HR docs"

    assert (await client.delete(f"/v1/knowledge_bases/{name}")).status_code == 204
    missing = await client.get(f"/v1/knowledge_bases/{name}")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert (await client.delete(f"/v1/knowledge_bases/{name}")).status_code == 404


async def test_upload_jobs_files_and_downloads(client: httpx.AsyncClient, stack: Stack) -> None:
    name = unique_name()
    assert (await client.post("/v1/knowledge_bases", json={"name": name})).status_code == 201
    upload = await client.post(
        f"/v1/knowledge_bases/{name}/files",
        files=[("files", (file_name, content)) for file_name, content in DOCS.items()],
        data={"chunk_size": "200", "chunk_overlap": "20"},
    )
    assert upload.status_code == 202
    jobs = upload.json()["jobs"]
    assert [job["file_name"] for job in jobs] == list(DOCS)
    assert all(job["state"] == "queued" and job["id"] for job in jobs)

    for job in jobs:
        settled = await wait_for_job(client, job["id"], stack)
        # The agreed fields (jobs also carry attempts, split settings and times).
        assert set(settled) >= {
            "id", "knowledge_base", "file_name", "state", "stage", "progress", "chunks", "error"
        }  # fmt: skip
        assert settled["state"] == settled["stage"] == "succeeded"
        assert settled["knowledge_base"] == name and settled["file_name"] == job["file_name"]
        assert settled["progress"] == 1.0 and settled["chunks"] >= 1 and settled["error"] is None

    files = {
        entry["name"]: entry
        for entry in (await client.get(f"/v1/knowledge_bases/{name}/files")).json()["data"]
    }
    assert set(files) == set(DOCS)
    for file_name, content in DOCS.items():
        assert files[file_name]["size"] == len(content)
        assert files[file_name]["state"] == "succeeded" and files[file_name]["chunks"] >= 1
    kb = (await client.get(f"/v1/knowledge_bases/{name}")).json()
    assert kb["file_count"] == 3
    assert kb["chunk_count"] == sum(entry["chunks"] for entry in files.values())

    chinese = "年假制度.txt"
    download = await client.get(f"/v1/knowledge_bases/{name}/files/{quote(chinese)}/content")
    assert download.status_code == 200
    assert download.content == DOCS[chinese]
    assert download.headers["content-type"].startswith("text/plain")
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("inline;")
    assert f"filename*=UTF-8''{quote(chinese, safe='')}" in disposition
    attachment = await client.get(f"/v1/knowledge_bases/{name}/files/refunds.md/content?download=true")
    assert attachment.headers["content-disposition"].startswith("attachment;")
    assert (await client.get(f"/v1/knowledge_bases/{name}/files/nope.txt/content")).status_code == 404

    assert (await client.delete(f"/v1/knowledge_bases/{name}/files/shipping.txt")).status_code == 204
    remaining = [
        entry["name"] for entry in (await client.get(f"/v1/knowledge_bases/{name}/files")).json()["data"]
    ]
    assert sorted(remaining) == sorted(["refunds.md", chinese])
    hits = (
        await client.post(f"/v1/knowledge_bases/{name}/search", json={"query": "express delivery Lyon"})
    ).json()
    assert "shipping.txt" not in {hit["file_name"] for hit in hits["data"]}
    assert (await client.delete(f"/v1/knowledge_bases/{name}/files/shipping.txt")).status_code == 404


async def test_upload_errors(client: httpx.AsyncClient, stack: Stack) -> None:
    unknown = await client.post(
        f"/v1/knowledge_bases/{unique_name()}/files", files={"files": ("a.txt", b"hi")}
    )
    assert unknown.status_code == 404

    name = await make_kb(client, stack, files={})
    # Past the ingest service's per-file limit: its RESOURCE_EXHAUSTED is a 413 for uploads.
    too_big = b"z" * int(INGEST_MAX_FILE_MB * 1024 * 1024 + 1024)
    response = await client.post(f"/v1/knowledge_bases/{name}/files", files={"files": ("big.txt", too_big)})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"

    broken = await client.post(
        f"/v1/knowledge_bases/{name}/files", files={"files": ("broken.pdf", b"%PDF-1.7 this is not a pdf")}
    )
    assert broken.status_code == 202
    failed = await wait_for_job(client, broken.json()["jobs"][0]["id"], stack)
    assert failed["state"] == failed["stage"] == "failed"
    assert failed["error"]

    assert (await client.get(f"/v1/jobs/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/v1/jobs/not-a-uuid")).status_code == 422


async def test_search_scores_and_ordering(client: httpx.AsyncClient, stack: Stack) -> None:
    name = await make_kb(client, stack)
    response = await client.post(
        f"/v1/knowledge_bases/{name}/search", json={"query": "How many days do I have to ask for a refund?"}
    )
    assert response.status_code == 200
    hits = response.json()["data"]
    assert hits and set(hits[0]) == {"id", "text", "score", "file_name", "metadata", "parent"}
    assert hits[0]["file_name"] == "refunds.md"
    scores = [hit["score"] for hit in hits]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scores == sorted(scores, reverse=True)

    chinese = (await client.post(f"/v1/knowledge_bases/{name}/search", json={"query": "年假有几天？"})).json()
    assert chinese["data"][0]["file_name"] == "年假制度.txt"

    one = (
        await client.post(f"/v1/knowledge_bases/{name}/search", json={"query": "refund", "top_k": 1})
    ).json()
    assert len(one["data"]) == 1
    threshold = (scores[0] + scores[-1]) / 2 if len(scores) > 1 else scores[0]
    kept = (
        await client.post(
            f"/v1/knowledge_bases/{name}/search",
            json={"query": "How many days do I have to ask for a refund?", "score_threshold": threshold},
        )
    ).json()["data"]
    assert kept and all(hit["score"] >= threshold - 1e-6 for hit in kept)
    assert len(kept) <= len(hits)

    missing = await client.post(f"/v1/knowledge_bases/{unique_name()}/search", json={"query": "refund"})
    assert missing.status_code == 404


async def test_search_in_an_empty_knowledge_base(client: httpx.AsyncClient, stack: Stack) -> None:
    name = await make_kb(client, stack, files={})
    response = await client.post(f"/v1/knowledge_bases/{name}/search", json={"query": "anything"})
    assert response.status_code == 200
    assert response.json() == {"data": []}


async def test_grounded_chat_with_the_openai_sdk(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, stack: Stack
) -> None:
    name = await make_kb(client, stack)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "How many days do I have to request a refund?"}
    ]
    answer = await sdk.chat.completions.create(
        model="extractive", messages=question, extra_body={"knowledge_base": name, "top_k": 3}
    )
    content = answer.choices[0].message.content or ""
    assert "30 days" in content
    assert answer.choices[0].finish_reason == "stop"
    extra = answer.model_extra or {}
    citations = extra["citations"]
    assert 1 <= len(citations) <= 3
    assert set(citations[0]) == {
        "file_name",
        "chunk_id",
        "score",
        "text",
        "url",
        "index",
        "cited",
        "supported",
    }
    assert citations[0]["file_name"] == "refunds.md" and citations[0]["index"] == 1
    assert citations[0]["cited"] and citations[0]["supported"]  # quoted verbatim, with [1]
    assert extra["abstained"] is False and extra["unsupported"] == []
    assert extra["retrieval_query"] == question[0]["content"]  # no history: the question itself
    assert citations[0]["url"] == f"/v1/knowledge_bases/{name}/files/refunds.md/content"
    assert all(0 <= c["score"] <= 1 for c in citations)
    # A citation's URL is a working download of the original.
    assert (await client.get(citations[0]["url"])).content == DOCS["refunds.md"]

    stream = await sdk.chat.completions.create(
        model="extractive",
        messages=question,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"knowledge_base": name, "top_k": 3},
    )
    chunks = [chunk async for chunk in stream]
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    unchecked = [{k: v for k, v in c.items() if k not in ("cited", "supported")} for c in citations]
    assert (first.model_extra or {})["citations"] == unchecked  # before the answer exists
    assert (first.model_extra or {})["abstained"] is False
    finish = next(chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason)
    assert (finish.model_extra or {})["citations"] == citations  # checked against the answer
    assert (finish.model_extra or {})["unsupported"] == []
    assert all("citations" not in (c.model_extra or {}) for c in chunks[1:] if c is not finish)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_chinese_question_and_quoted_citation_url(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, stack: Stack
) -> None:
    name = await make_kb(client, stack)
    answer = await sdk.chat.completions.create(
        model="extractive",
        messages=[{"role": "user", "content": "员工每年有几天年假？"}],
        extra_body={"knowledge_base": name, "top_k": 1},
    )
    assert "十五天" in (answer.choices[0].message.content or "")
    citation = (answer.model_extra or {})["citations"][0]
    assert citation["file_name"] == "年假制度.txt"
    assert citation["url"] == f"/v1/knowledge_bases/{name}/files/{quote('年假制度.txt', safe='')}/content"
    assert (await client.get(citation["url"])).content == DOCS["年假制度.txt"]


async def test_kb_models_select_a_knowledge_base(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, stack: Stack
) -> None:
    name = await make_kb(client, stack)
    models = {model.id: model for model in (await sdk.models.list()).data}
    assert "extractive" in models
    assert f"kb:{name}" in models and models[f"kb:{name}"].object == "model"

    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "How long does express delivery take?"}
    ]
    by_model = await sdk.chat.completions.create(model=f"kb:{name}", messages=question)
    by_field = await sdk.chat.completions.create(
        model="extractive", messages=question, extra_body={"knowledge_base": name}
    )
    assert by_model.model == f"kb:{name}"
    assert by_model.choices[0].message.content == by_field.choices[0].message.content
    assert (by_model.model_extra or {})["citations"] == (by_field.model_extra or {})["citations"]
    assert (by_model.model_extra or {})["citations"][0]["file_name"] == "shipping.txt"


async def test_chat_against_missing_or_empty_knowledge_bases(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, stack: Stack
) -> None:
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the refund policy?"}]
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(
            model="extractive", messages=question, extra_body={"knowledge_base": unique_name()}
        )
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model=f"kb:{unique_name()}", messages=question, stream=True)

    empty = await make_kb(client, stack, files={})
    answer = await sdk.chat.completions.create(
        model="extractive", messages=question, extra_body={"knowledge_base": empty}
    )
    assert (answer.model_extra or {})["citations"] == []
    assert answer.choices[0].message.content  # the "nothing found" reply, not an error


async def test_readyz_when_everything_is_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "services": {"embed": "serving", "retrieve": "serving", "generate": "serving", "ingest": "serving"},
    }
