"""Chatchat v0.2.10's knowledge-base API test sequence, replayed against Zhiku's compatibility
routes over the real stack (services in-process, a real Celery worker, uvicorn), then its chat
routes. Requests are sent the way Chatchat's clients send them: JSON bodies (a bare string for
``delete_knowledge_base``), multipart uploads with form fields, SSE frames read as
``data: {json}``.

One deliberate deviation from Chatchat's sequence: Zhiku's ``delete_docs`` removes originals
too, so the files are uploaded again before ``recreate_vector_store`` (in Chatchat they stay on
disk and the rebuild brings them back).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from . import stack as stack_module
from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCX = Path("/work/shared/evaldata/docs/test.docx")
FILES: dict[str, bytes] = {
    "README.md": (
        "# 知库 Zhiku\n\n知库是一个知识库问答平台，支持上传文档、检索和带引用的回答。\n\n"
        "## Formats\n\nSupported file formats are txt, md, pdf, docx, epub and html. "
        "Each file is parsed, split into chunks and embedded.\n\n"
        "## Search\n\nSearch returns the passages most similar to the question, best first.\n"
    ).encode(),
    "faq.txt": (
        b"Q: How do I request annual leave? A: Ask your manager two weeks in advance.\n\n"
        b"Q: How long does a refund take? A: Refunds are paid within five business days.\n\n"
        b"Q: Where do orders ship from? A: From the warehouse in Lyon, in 3 to 7 days.\n"
    ),
    "test.docx": DOCX.read_bytes(),
}
# What Chatchat's ApiRequest sends by default (CHUNK_SIZE, OVERLAP_SIZE).
CHUNKING = {"chunk_size": "250", "chunk_overlap": "50"}
TOP_K = 3  # Chatchat's VECTOR_SEARCH_TOP_K, the default of search_docs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # The shared stack caps ingested files at 50 KB (to test the limit); the real .docx is larger.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module, "INGEST_MAX_FILE_MB", 1.0)
        async with running_stack(tmp_path_factory.mktemp("chatchat")) as running:
            yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        yield client


def multipart(names: list[str] | None = None) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, FILES[name])) for name in names or list(FILES)]


def frames(body: str) -> list[dict]:
    """The JSON objects of an SSE body, as Chatchat's client reads them (``data: `` stripped)."""
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


async def upload(client: httpx.AsyncClient, kb: str, override: bool, **extra: str) -> dict:
    data = {"knowledge_base_name": kb, "override": str(override).lower(), **CHUNKING, **extra}
    reply = await client.post("/knowledge_base/upload_docs", data=data, files=multipart())
    assert reply.status_code == 200, reply.text
    return reply.json()


async def search(client: httpx.AsyncClient, kb: str, query: str, **extra: object) -> list[dict]:
    reply = await client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": kb, "query": query, **extra}
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


async def kb_names(client: httpx.AsyncClient) -> list[str]:
    listed = (await client.get("/knowledge_base/list_knowledge_bases")).json()
    assert listed["code"] == 200 and isinstance(listed["data"], list)
    return listed["data"]


async def test_chatchat_knowledge_base_sequence(client: httpx.AsyncClient) -> None:
    kb = f"kb_for_api_test_{uuid.uuid4().hex[:6]}"

    # delete before: an unknown KB answers code 404 in the envelope, HTTP 200, as Chatchat does.
    gone = await client.post("/knowledge_base/delete_knowledge_base", json=kb)
    assert gone.status_code == 200 and gone.json()["code"] == 404
    assert kb not in await kb_names(client)

    # create: blank name, new name, duplicate name.
    url = "/knowledge_base/create_knowledge_base"
    blank = (await client.post(url, json={"knowledge_base_name": " "})).json()
    assert blank == {"code": 404, "msg": "知识库名称不能为空，请重新填写知识库名称", "data": None}
    created = (await client.post(url, json={"knowledge_base_name": kb})).json()
    assert (created["code"], created["msg"]) == (200, f"已新增知识库 {kb}")
    duplicate = await client.post(url, json={"knowledge_base_name": kb})
    assert duplicate.status_code == 200
    assert (duplicate.json()["code"], duplicate.json()["msg"]) == (404, f"已存在同名知识库 {kb}")
    assert kb in await kb_names(client)

    # upload 3 files, re-upload without override (all fail), with override (+ custom docs).
    first = await upload(client, kb, override=True)
    assert first["code"] == 200 and first["data"]["failed_files"] == {}
    again = await upload(client, kb, override=False)
    assert again["code"] == 200 and set(again["data"]["failed_files"]) == set(FILES)
    assert again["data"]["failed_files"]["faq.txt"] == "文件 faq.txt 已存在。"
    custom_docs = json.dumps({"faq.txt": [{"page_content": "custom docs", "metadata": {}}]})
    override = await upload(client, kb, override=True, docs=custom_docs, zh_title_enhance="true")
    assert override["code"] == 200 and override["data"]["failed_files"] == {}

    listed = (await client.get("/knowledge_base/list_files", params={"knowledge_base_name": kb})).json()
    assert listed["code"] == 200 and sorted(listed["data"]) == sorted(FILES)

    # search returns top_k, a bare list of {page_content, metadata, score}, best first.
    hits = await search(client, kb, "Which file formats are supported?")
    assert len(hits) == TOP_K
    assert all({"page_content", "metadata", "score"} <= set(hit) for hit in hits)
    assert all(0.0 <= hit["score"] <= 1.0 and hit["metadata"]["source"] in FILES for hit in hits)
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    assert hits[0]["metadata"]["source"] == "README.md"
    assert len(await search(client, kb, "refund", top_k=1)) == 1
    # Chatchat's threshold is a distance: 0 keeps only exact matches (score >= 1).
    everything = await search(client, kb, "refund", top_k=20)
    cut = everything[len(everything) // 2]["score"]
    assert cut < everything[0]["score"]
    strict = await search(client, kb, "refund", top_k=20, score_threshold=round(1 - cut, 6))
    assert strict and all(hit["score"] >= cut - 1e-6 for hit in strict) and len(strict) < len(everything)

    # update re-indexes from the stored originals.
    url = "/knowledge_base/update_docs"
    updated = (await client.post(url, json={"knowledge_base_name": kb, "file_names": list(FILES)})).json()
    assert updated["code"] == 200 and updated["data"]["failed_files"] == {}
    missing = (await client.post(url, json={"knowledge_base_name": kb, "file_names": ["nope.txt"]})).json()
    assert missing["data"]["failed_files"] == {"nope.txt": "未找到文件 nope.txt"}

    # download the original back.
    download = await client.get(
        "/knowledge_base/download_doc", params={"knowledge_base_name": kb, "file_name": "faq.txt"}
    )
    assert download.status_code == 200 and download.content == FILES["faq.txt"]
    assert download.headers["content-disposition"].startswith("attachment")
    absent = await client.get(
        "/knowledge_base/download_doc", params={"knowledge_base_name": kb, "file_name": "x.txt"}
    )
    assert absent.status_code == 200 and absent.json()["code"] == 404

    # delete docs, then search is empty.
    url = "/knowledge_base/delete_docs"
    deleted = (await client.post(url, json={"knowledge_base_name": kb, "file_names": list(FILES)})).json()
    assert deleted["code"] == 200 and deleted["data"]["failed_files"] == {}
    assert await search(client, kb, "Which file formats are supported?") == []

    # recreate the vector store (files uploaded again first: see the module docstring).
    assert (await upload(client, kb, override=True))["data"]["failed_files"] == {}
    rebuilt = await client.post("/knowledge_base/recreate_vector_store", json={"knowledge_base_name": kb})
    assert rebuilt.status_code == 200 and rebuilt.headers["content-type"].startswith("text/event-stream")
    progress = frames(rebuilt.text)
    assert [frame["code"] for frame in progress] == [200] * len(FILES)
    assert [frame["finished"] for frame in progress] == [1, 2, 3]
    assert {frame["total"] for frame in progress} == {3}
    assert sorted(frame["doc"] for frame in progress) == sorted(FILES)
    assert progress[-1]["msg"] == f"(3 / 3): {progress[-1]['doc']}"
    assert len(await search(client, kb, "本项目支持哪些文件格式?")) == TOP_K

    # delete the KB.
    dropped = (await client.post("/knowledge_base/delete_knowledge_base", json=kb)).json()
    assert (dropped["code"], dropped["msg"]) == (200, f"成功删除知识库 {kb}")
    assert kb not in await kb_names(client)
    assert await search(client, kb, "anything") == []


async def test_chatchat_refusals(client: httpx.AsyncClient) -> None:
    attack = (
        await client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": "../etc"})
    ).json()
    assert attack["code"] == 403
    listed = (
        await client.get("/knowledge_base/list_files", params={"knowledge_base_name": "no_such_kb"})
    ).json()
    assert (listed["code"], listed["data"]) == (404, [])
    orphan = await client.post(
        "/knowledge_base/upload_docs",
        data={"knowledge_base_name": "no_such_kb"},
        files=multipart(["faq.txt"]),
    )
    assert orphan.status_code == 200 and orphan.json()["code"] == 404
    strict = await client.post(
        "/knowledge_base/recreate_vector_store",
        json={"knowledge_base_name": "no_such_kb", "allow_empty_kb": False},
    )
    assert frames(strict.text) == [{"code": 404, "msg": "未找到知识库 ‘no_such_kb’"}]
    assert "no_such_kb" not in await kb_names(client)


async def test_chatchat_chat_routes(client: httpx.AsyncClient) -> None:
    kb = f"chat_{uuid.uuid4().hex[:6]}"
    assert (
        await client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": kb})
    ).json()["code"] == 200
    reply = await client.post(
        "/knowledge_base/upload_docs", data={"knowledge_base_name": kb}, files=multipart(["faq.txt"])
    )
    assert reply.json()["data"]["failed_files"] == {}
    question = {
        "query": "How long does a refund take?",
        "knowledge_base_name": kb,
        "model_name": "extractive",  # the served model, by its id in GET /v1/models
    }

    streamed = await client.post("/chat/knowledge_base_chat", json={**question, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    parts = frames(streamed.text)
    assert len(parts) >= 2 and all(set(part) == {"answer"} for part in parts[:-1])
    assert set(parts[-1]) == {"docs"}
    answer = "".join(part["answer"] for part in parts[:-1])
    assert "refund" in answer  # the extractive generator quotes the retrieved passage
    assert "five business days" in parts[-1]["docs"][0]
    assert parts[-1]["docs"][0].startswith("出处 [1] [faq.txt](")
    assert "knowledge_base/download_doc?knowledge_base_name=" in parts[-1]["docs"][0]

    whole = frames((await client.post("/chat/knowledge_base_chat", json=question)).text)
    assert len(whole) == 1 and set(whole[0]) == {"answer", "docs"}
    assert whole[0]["answer"] == answer

    unknown = await client.post(
        "/chat/knowledge_base_chat", json={**question, "knowledge_base_name": "no_such_kb"}
    )
    assert unknown.status_code == 200 and unknown.json() == {
        "code": 404,
        "msg": "未找到知识库 no_such_kb",
        "data": None,
    }

    history = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]
    plain = await client.post(
        "/chat/chat", json={"query": "Say something", "history": history, "stream": True}
    )
    assert plain.status_code == 200
    tokens = frames(plain.text)
    assert tokens and all(set(token) == {"text", "message_id"} for token in tokens)
    assert len({token["message_id"] for token in tokens}) == 1
    single = frames((await client.post("/chat/chat", json={"query": "Say something"})).text)
    assert len(single) == 1 and single[0]["text"]

    # Chatchat's clients send their own LLM's name with every request: one not served here is
    # answered by the default model, as a drop-in must (the OpenAI route's model is a 404).
    for route, body in (("/chat/chat", {"query": "Hi"}), ("/chat/knowledge_base_chat", question)):
        foreign_model = await client.post(route, json={**body, "model_name": "chatglm3-6b", "stream": False})
        assert foreign_model.status_code == 200, foreign_model.text
        answered = frames(foreign_model.text)
        assert len(answered) == 1 and (answered[0].get("text") or answered[0].get("answer"))
