"""``search_knowledge_base`` over the real stack (services over loopback gRPC, the Celery
worker, the gateway): passages with citation data from one or several knowledge bases, and the
caller's key scope applied by the gateway's one guard: a knowledge base outside the key's
scope answers exactly like one that does not exist, and no caller at all is refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from services.common.config import CommonSettings
from services.gateway.access import Principal
from services.gateway.agent.tools import ToolContext, ToolError, build_registry
from services.gateway.authz import GATEWAY, KnowledgeBaseGuard, acting_as
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUFFIX = uuid.uuid4().hex[:6]
HARBOUR = f"harbour-{SUFFIX}"
FINANCE = f"finance-{SUFFIX}"
DOCS = {
    HARBOUR: {"tides.txt": b"Tide tables. High tide at Port Vell on 3 March is at 06:42, 1.8 metres high.\n"},
    FINANCE: {
        "budget.txt": b"Budget 2026. The harbour dredging budget is 48,000 euros for the spring works.\n"
    },
}


def limited_to(*names: str) -> Principal:
    return Principal(
        key_id="k-limited", name="bot", admin=False, knowledge_bases=frozenset(names), rate_limit_per_minute=0
    )


async def settle(client: httpx.AsyncClient, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not settle")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("agent-kb")) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
            for kb, files in DOCS.items():
                assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
                upload = await client.post(
                    f"/v1/knowledge_bases/{kb}/files", files=[("files", item) for item in files.items()]
                )
                assert upload.status_code == 202, upload.text
                for job in upload.json()["jobs"]:
                    assert (await settle(client, job["id"]))["state"] == "succeeded"
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def context(stack: Stack) -> AsyncIterator[ToolContext]:
    addrs: dict[str, Any] = {f"{name}_addr": address for name, address in stack.addresses.items()}
    common = CommonSettings(**addrs)
    settings = GatewaySettings(catalog_url="sqlite:///unused.db", common=common)
    clients = ServiceClients.connect(common, KnowledgeBaseGuard())
    yield ToolContext(settings=settings, clients=clients)
    await clients.close()


TOOLS = build_registry(GatewaySettings(catalog_url="sqlite:///unused.db"))


async def search(context: ToolContext, **arguments: object):
    return await TOOLS.run("search_knowledge_base", arguments, context)


async def test_passages_carry_citation_data(context: ToolContext) -> None:
    with acting_as(GATEWAY):
        result = await search(context, query="When is high tide at Port Vell?", knowledge_bases=[HARBOUR])
    assert not result.external
    top = result.citations[0]
    assert top["knowledge_base"] == HARBOUR and top["file_name"] == "tides.txt"
    assert "06:42" in top["text"] and top["chunk_id"] and 0 <= top["score"] <= 1
    assert top["url"] == f"/v1/knowledge_bases/{HARBOUR}/files/tides.txt/content"
    assert result.text.startswith(f"[1] {HARBOUR} / tides.txt (score ")
    assert "06:42" in result.text
    assert result.short() == f"{len(result.citations)} passage(s) from {HARBOUR}"
    assert result.data["passages"] == result.citations and result.data["knowledge_bases"] == [HARBOUR]


async def test_several_knowledge_bases_are_merged(context: ToolContext) -> None:
    with acting_as(GATEWAY):
        result = await search(
            context, query="harbour budget and tides", knowledge_bases=[HARBOUR, FINANCE], top_k=5
        )
    assert {hit["knowledge_base"] for hit in result.citations} == {HARBOUR, FINANCE}
    scores = [hit["score"] for hit in result.citations]
    assert scores == sorted(scores, reverse=True)
    with acting_as(GATEWAY):
        one = await search(
            context, query="harbour budget and tides", knowledge_bases=[HARBOUR, FINANCE], top_k=1
        )
    assert len(one.citations) == 1


async def test_the_requests_knowledge_bases_are_the_default(context: ToolContext) -> None:
    scoped = ToolContext(settings=context.settings, clients=context.clients, knowledge_bases=(FINANCE,))
    with acting_as(GATEWAY):
        result = await search(scoped, query="dredging budget")
    assert result.citations[0]["knowledge_base"] == FINANCE and "48,000" in result.citations[0]["text"]
    with acting_as(GATEWAY), pytest.raises(ToolError, match="name at least one knowledge base"):
        await search(context, query="dredging budget")


async def test_a_scoped_key_sees_only_its_knowledge_bases(context: ToolContext) -> None:
    with acting_as(limited_to(HARBOUR)):
        allowed = await search(context, query="high tide", knowledge_bases=[HARBOUR])
        assert allowed.citations and {hit["knowledge_base"] for hit in allowed.citations} == {HARBOUR}
        with pytest.raises(ToolError) as forbidden:
            await search(context, query="dredging budget", knowledge_bases=[FINANCE])
        with pytest.raises(ToolError) as mixed:
            await search(context, query="dredging budget", knowledge_bases=[HARBOUR, FINANCE])
        with pytest.raises(ToolError) as unknown:
            await search(context, query="dredging budget", knowledge_bases=[f"nothing-{SUFFIX}"])
    assert str(forbidden.value) == f"knowledge base {FINANCE!r} does not exist"
    assert str(mixed.value) == str(forbidden.value)
    assert str(unknown.value) == f"knowledge base 'nothing-{SUFFIX}' does not exist"  # same words
    assert "48,000" not in str(forbidden.value) + str(mixed.value)


async def test_no_established_caller_is_refused(context: ToolContext) -> None:
    """Outside a request (no caller in the context) the guard fails closed."""
    with pytest.raises(ToolError, match="does not exist"):
        await search(context, query="high tide", knowledge_bases=[HARBOUR])
