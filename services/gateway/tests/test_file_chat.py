"""File chat over the real stack (services in-process, a real Celery worker, uvicorn): files
go into a temporary knowledge base, chat cites them, and the knowledge base is swept after
its (here tiny) time to live. Both the native route and Chatchat's upload_temp_docs/file_chat."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import pytest_asyncio

from services.gateway.store import GatewayStore

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

TTL_S = 2.0
NOTES = (
    b"The Zephyr project kickoff is on March 3rd in room 4B.\n\n"
    b"Budget questions go to Mira Okafor, the project's finance lead.\n"
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(
        tmp_path_factory.mktemp("file-chat"), file_chat_ttl_s=TTL_S, file_chat_sweep_interval_s=0.2
    ) as running:
        yield running


async def _gone(client: httpx.AsyncClient, kb: str, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await client.get(f"/v1/knowledge_bases/{kb}")).status_code == 404:
            return True
        await asyncio.sleep(0.2)
    return False


def frames(body: str) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


async def test_file_chat_cites_the_upload_then_expires(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        created = await client.post(
            "/v1/file_chats", files=[("files", ("notes.txt", NOTES)), ("files", ("empty.txt", b""))]
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["expires_at"] > time.time()
        by_name = {f["file_name"]: f for f in body["files"]}
        assert by_name["notes.txt"]["state"] == "succeeded" and by_name["notes.txt"]["chunks"] >= 1
        assert by_name["empty.txt"]["state"] == "failed" and by_name["empty.txt"]["error"]
        kb = f"tmp_{body['id']}"

        async with openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0) as sdk:
            reply = await sdk.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Who handles budget questions for Zephyr?"}],
                extra_body={"file_chat_id": body["id"]},
            )
        citations = (reply.model_extra or {})["citations"]
        assert citations and citations[0]["file_name"] == "notes.txt"
        assert "Mira Okafor" in " ".join(c["text"] for c in citations)

        # Hidden from the listings, though it exists until swept.
        assert kb not in [k["name"] for k in (await client.get("/v1/knowledge_bases")).json()["data"]]
        assert f"kb:{kb}" not in [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert kb not in (await client.get("/knowledge_base/list_knowledge_bases")).json()["data"]

        assert await _gone(client, kb), "the temporary knowledge base was not swept"
        expired = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "budget?"}], "file_chat_id": body["id"]},
        )
        assert expired.status_code == 404


async def test_chatchat_upload_temp_docs_and_file_chat(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        uploaded = await client.post(
            "/knowledge_base/upload_temp_docs",
            files=[("files", ("notes.txt", NOTES))],
            data={"chunk_size": "250", "chunk_overlap": "50", "zh_title_enhance": "false"},
        )
        assert uploaded.status_code == 200, uploaded.text
        envelope = uploaded.json()
        assert envelope["code"] == 200 and envelope["data"]["failed_files"] == {}
        knowledge_id = envelope["data"]["id"]

        chat = await client.post(
            "/chat/file_chat",
            json={"query": "When is the Zephyr kickoff?", "knowledge_id": knowledge_id, "stream": True},
        )
        assert chat.status_code == 200 and chat.headers["content-type"].startswith("text/event-stream")
        parsed = frames(chat.text)
        assert all(set(frame) == {"answer"} for frame in parsed[:-1]) and len(parsed) >= 2
        docs = parsed[-1]["docs"]
        assert docs[0].startswith("出处 [1] [notes.txt]") and "March 3rd" in " ".join(docs)

        whole = await client.post(
            "/chat/file_chat", json={"query": "kickoff room?", "knowledge_id": knowledge_id}
        )
        [single] = frames(whole.text)
        assert set(single) == {"answer", "docs"} and single["answer"]

        unknown = await client.post("/chat/file_chat", json={"query": "q", "knowledge_id": "nope"})
        assert unknown.status_code == 200
        assert unknown.json()["code"] == 404 and "nope" in unknown.json()["msg"]
        assert await _gone(client, f"tmp_{knowledge_id}")


async def test_sweeping_reads_expiry_from_the_database(stack: Stack) -> None:
    """A file chat recorded by another (or an earlier, since restarted) gateway process is
    swept too: expiry lives in the database, not in the process that created it."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        other = GatewayStore(f"sqlite:///{stack.data_dir / 'catalog.db'}")
        try:
            chat = await other.run(other.file_chats.create, 3600, None)
            created = await client.post("/v1/knowledge_bases", json={"name": chat.knowledge_base})
            assert created.status_code == 201, created.text
            await other.run(other.file_chats.renew, chat.id, 0)  # expires now
        finally:
            other.dispose()
        assert await _gone(client, chat.knowledge_base)
