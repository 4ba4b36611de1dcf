"""The MCP server at ``/mcp``, driven by the ``mcp`` SDK's own client against the running stack.

The gateway runs behind uvicorn with the real services (``stack.py``) and API keys configured:
an admin key sees every knowledge base, a key limited to ``handbook`` must find ``finance``
exactly as it finds a name that does not exist, and a request without a key is a 401 before
MCP is reached. Tool failures (unknown names, bad arguments) are tool errors in a session that
keeps working. A second, open gateway (no keys, services down) shows that /mcp needs no key
when none is configured and that a dead service is a tool error too.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import docx
import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from services.gateway.app import create_app

from .stack import Stack, running_stack
from .support import gateway_settings, served

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "mcp-admin-key"
LEAVE_FILE = "leave-policy.txt"
LEAVE_TEXT = (
    "Annual leave policy. Every employee gets 25 days of annual leave per calendar year. "
    "Leave requests are filed in the HR portal at least two weeks ahead.\n\n"
    "Unused leave carries over until March 31 of the following year."
)
BUDGET_FILE = "budget.md"
BUDGET_TEXT = "# Travel budget\n\nThe travel budget of the finance team for 2026 is 48,000 euros."
RULES_FILE = "travel-rules.docx"
RULES_TEXT = "Train travel is booked in second class unless the trip is longer than six hours."
TOOLS = {"list_knowledge_bases", "search", "ask", "get_file_content"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


async def upload(client: httpx.AsyncClient, kb: str, name: str, content: bytes) -> None:
    reply = await client.post(
        f"/v1/knowledge_bases/{kb}/files", files={"files": (name, content)}, headers=bearer(ADMIN)
    )
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["jobs"][0]["id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(ADMIN))).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            assert job["state"] == "succeeded", job
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not settle")


class World:
    def __init__(self, stack: Stack, scoped_key: str) -> None:
        self.stack = stack
        self.scoped_key = scoped_key


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with (
        running_stack(tmp_path_factory.mktemp("mcp"), api_keys=[ADMIN]) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=120) as client,
    ):
        for kb in ("handbook", "finance"):
            created = await client.post("/v1/knowledge_bases", json={"name": kb}, headers=bearer(ADMIN))
            assert created.status_code == 201, created.text
        await upload(client, "handbook", LEAVE_FILE, LEAVE_TEXT.encode())
        await upload(client, "finance", BUDGET_FILE, BUDGET_TEXT.encode())
        await upload(client, "finance", RULES_FILE, docx_bytes(RULES_TEXT))
        made = await client.post(
            "/v1/keys", json={"name": "handbook only", "knowledge_bases": ["handbook"]}, headers=bearer(ADMIN)
        )
        assert made.status_code == 201, made.text
        yield World(stack, made.json()["key"])


@asynccontextmanager
async def mcp_session(base_url: str, key: str | None) -> AsyncIterator[ClientSession]:
    """An initialized MCP session over streamable HTTP, with the key as a Bearer token."""
    headers = bearer(key) if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    return await session.call_tool(tool, arguments)


async def test_tools_are_listed_with_descriptions_and_schemas(world: World) -> None:
    async with mcp_session(world.stack.url, ADMIN) as session:
        listed = (await session.list_tools()).tools
    by_name = {tool.name: tool for tool in listed}
    assert set(by_name) == TOOLS
    for tool in listed:
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
    search = by_name["search"].input_schema
    assert set(search["required"]) == {"query", "knowledge_bases"}
    assert set(search["properties"]["mode"]["enum"]) == {"hybrid", "dense", "sparse"}
    assert {"top_k", "metadata_filter", "file_names", "score_threshold"} <= set(search["properties"])
    assert "ctx" not in search["properties"]
    assert set(by_name["ask"].input_schema["required"]) == {"question", "knowledge_bases"}
    assert set(by_name["get_file_content"].input_schema["required"]) == {"knowledge_base", "file_name"}


async def test_admin_lists_searches_asks_and_reads(world: World) -> None:
    async with mcp_session(world.stack.url, ADMIN) as session:
        listing = await call(session, "list_knowledge_bases", {})
        assert not listing.is_error, text_of(listing)
        names = {kb["name"]: kb for kb in listing.structured_content["knowledge_bases"]}
        assert set(names) == {"handbook", "finance"}
        assert names["handbook"]["file_count"] == 1 and names["handbook"]["chunk_count"] >= 1
        assert "handbook" in text_of(listing) and "finance" in text_of(listing)

        for mode in ("hybrid", "dense", "sparse"):
            found = await call(
                session,
                "search",
                {"query": "how many days of annual leave", "knowledge_bases": "handbook", "mode": mode},
            )
            assert not found.is_error, text_of(found)
            hits = found.structured_content["hits"]
            assert hits and hits[0]["file_name"] == LEAVE_FILE, (mode, hits)
            assert hits[0]["knowledge_base"] == "handbook" and 0 <= hits[0]["score"] <= 1
            assert found.structured_content["mode"] == mode
        # The loop above runs (three modes), so found is the last mode's result.
        assert "25 days" in text_of(found) and LEAVE_FILE in text_of(found)  # type: ignore[possibly-undefined]

        both = await call(
            session,
            "search",
            {"query": "travel budget 2026", "knowledge_bases": ["handbook", "finance"], "top_k": 10},
        )
        assert not both.is_error, text_of(both)
        assert both.structured_content["hits"][0]["file_name"] == BUDGET_FILE
        assert {hit["knowledge_base"] for hit in both.structured_content["hits"]} == {"handbook", "finance"}

        filtered = await call(
            session,
            "search",
            {"query": "budget", "knowledge_bases": ["handbook", "finance"], "file_names": [LEAVE_FILE]},
        )
        assert {hit["file_name"] for hit in filtered.structured_content["hits"]} == {LEAVE_FILE}
        no_match = await call(
            session,
            "search",
            {"query": "leave", "knowledge_bases": "handbook", "metadata_filter": {"department": "none"}},
        )
        assert not no_match.is_error and no_match.structured_content["hits"] == []

        answer = await call(
            session,
            "ask",
            {"question": "How many days of annual leave do employees get?", "knowledge_bases": "handbook"},
        )
        assert not answer.is_error, text_of(answer)
        body = answer.structured_content
        assert "25" in body["answer"] and body["abstained"] is False
        assert body["citations"] and body["citations"][0]["file_name"] == LEAVE_FILE
        assert body["citations"][0]["url"] == f"/v1/knowledge_bases/handbook/files/{LEAVE_FILE}/content"
        assert any(cite["cited"] for cite in body["citations"])
        assert "Sources:" in text_of(answer) and "[1]" in text_of(answer)

        content = await call(
            session, "get_file_content", {"knowledge_base": "handbook", "file_name": LEAVE_FILE}
        )
        assert not content.is_error, text_of(content)
        assert content.structured_content["text"] == LEAVE_TEXT
        assert content.structured_content["next_offset"] is None
        assert content.structured_content["content_type"].startswith("text/plain")
        page = await call(
            session,
            "get_file_content",
            {"knowledge_base": "handbook", "file_name": LEAVE_FILE, "offset": 10, "max_chars": 20},
        )
        assert page.structured_content["text"] == LEAVE_TEXT[10:30]
        assert page.structured_content["next_offset"] == 30
        assert page.structured_content["total_chars"] == len(LEAVE_TEXT)
        chunks = await call(
            session,
            "get_file_content",
            {"knowledge_base": "finance", "file_name": BUDGET_FILE, "query": "travel budget"},
        )
        assert not chunks.is_error, text_of(chunks)
        assert chunks.structured_content["chunks"][0]["file_name"] == BUDGET_FILE
        assert "48,000" in chunks.structured_content["chunks"][0]["text"]

        rules = {"knowledge_base": "finance", "file_name": RULES_FILE}
        binary = await call(session, "get_file_content", rules)
        assert binary.is_error, text_of(binary)
        assert "not text: pass query to read its indexed chunks" in text_of(binary)
        read = await call(
            session,
            "get_file_content",
            {"knowledge_base": "finance", "file_name": RULES_FILE, "query": "train travel class"},
        )
        assert not read.is_error, text_of(read)
        assert read.structured_content["text"] is None
        assert read.structured_content["content_type"].endswith("wordprocessingml.document")
        assert [chunk["text"] for chunk in read.structured_content["chunks"]] == [RULES_TEXT]


def _named_away(message: str, name: str) -> str:
    return re.sub(re.escape(repr(name)), "<kb>", message)


async def test_scoped_key_sees_only_its_knowledge_base(world: World) -> None:
    async with mcp_session(world.stack.url, world.scoped_key) as session:
        listing = await call(session, "list_knowledge_bases", {})
        assert [kb["name"] for kb in listing.structured_content["knowledge_bases"]] == ["handbook"]
        assert "finance" not in text_of(listing)

        allowed = await call(session, "search", {"query": "annual leave", "knowledge_bases": "handbook"})
        assert not allowed.is_error and allowed.structured_content["hits"]

        attempts = {
            "search": lambda kb: {"query": "travel budget", "knowledge_bases": ["handbook", kb]},
            "ask": lambda kb: {"question": "What is the travel budget?", "knowledge_bases": kb},
            "get_file_content": lambda kb: {"knowledge_base": kb, "file_name": BUDGET_FILE},
        }
        for tool, arguments in attempts.items():
            hidden = await call(session, tool, arguments("finance"))
            missing = await call(session, tool, arguments("ghost"))
            assert hidden.is_error and missing.is_error, tool
            assert hidden.structured_content is None
            assert "knowledge base 'finance' does not exist" in text_of(hidden), text_of(hidden)
            assert _named_away(text_of(hidden), "finance") == _named_away(text_of(missing), "ghost"), tool
            assert "48,000" not in text_of(hidden)


async def test_bad_arguments_are_tool_errors_and_the_session_goes_on(world: World) -> None:
    async with mcp_session(world.stack.url, ADMIN) as session:
        bad_mode = await call(
            session, "search", {"query": "leave", "knowledge_bases": "handbook", "mode": "fuzzy"}
        )
        assert bad_mode.is_error, text_of(bad_mode)
        assert "invalid arguments for search: mode: Input should be 'hybrid', 'dense' or 'sparse'" in text_of(
            bad_mode
        )
        assert "pydantic" not in text_of(bad_mode)
        bad_name = await call(session, "search", {"query": "leave", "knowledge_bases": "../etc"})
        assert bad_name.is_error and "knowledge_bases" in text_of(bad_name), text_of(bad_name)
        no_kb = await call(session, "ask", {"question": "leave?", "knowledge_bases": []})
        assert no_kb.is_error and "at least one" in text_of(no_kb), text_of(no_kb)
        too_many = await call(
            session, "search", {"query": "leave", "knowledge_bases": "handbook", "top_k": 500}
        )
        assert too_many.is_error and "top_k: Input should be less than or equal to 100" in text_of(too_many)
        no_file = await call(
            session, "get_file_content", {"knowledge_base": "handbook", "file_name": "nope.txt"}
        )
        assert no_file.is_error and "nope.txt" in text_of(no_file), text_of(no_file)
        still = await call(session, "list_knowledge_bases", {})
        assert not still.is_error and len(still.structured_content["knowledge_bases"]) == 2


async def test_without_a_key_mcp_is_401(world: World) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=world.stack.url) as client:
        for sent in (headers, {**headers, **bearer("not-a-key")}):
            reply = await client.post("/mcp", json=initialize, headers=sent)
            assert reply.status_code == 401, reply.text
            assert reply.headers["www-authenticate"] == "Bearer"
    with pytest.raises(ExceptionGroup) as refused:  # the SDK's client cannot even initialize
        async with mcp_session(world.stack.url, None):
            pass
    assert refused.group_contains(MCPError)


async def tool_calls(base_url: str) -> dict[tuple[str, str], float]:
    """``zhiku_mcp_tool_calls_total`` by (tool, outcome), read from the gateway's /metrics."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        metrics = (await client.get("/metrics")).text
    found = re.findall(r'zhiku_mcp_tool_calls_total\{outcome="(\w+)",tool="(\w+)"\} ([0-9.]+)', metrics)
    return {(tool, outcome): float(value) for outcome, tool, value in found}


async def test_tool_calls_are_counted_by_tool_and_outcome(world: World) -> None:
    before = await tool_calls(world.stack.url)
    async with mcp_session(world.stack.url, ADMIN) as session:
        await call(session, "list_knowledge_bases", {})
        await call(session, "search", {"query": "leave", "knowledge_bases": "ghost"})
        await call(session, "search", {"query": "leave", "knowledge_bases": "handbook", "mode": "fuzzy"})
        unknown = await call(session, "drop_tables", {})
        assert unknown.is_error and "drop_tables" in text_of(unknown), text_of(unknown)
    after = await tool_calls(world.stack.url)
    grown = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
    assert grown == {
        ("list_knowledge_bases", "ok"): 1,
        ("search", "client_error"): 2,
        ("unknown", "client_error"): 1,
    }
    async with httpx.AsyncClient(base_url=world.stack.url) as client:
        metrics = (await client.get("/metrics")).text
    assert re.search(r'zhiku_http_requests_total\{method="POST",route="/mcp",status="200"\}', metrics)


async def test_open_gateway_needs_no_key_and_a_dead_service_is_a_tool_error() -> None:
    async with served(create_app(gateway_settings({}))) as url, mcp_session(url, None) as session:
        assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
        before = await tool_calls(url)
        down = await call(session, "list_knowledge_bases", {})
        assert down.is_error and "ingest service is unavailable" in text_of(down), text_of(down)
        after = await tool_calls(url)
        server_errors = ("list_knowledge_bases", "server_error")
        assert after[server_errors] == before.get(server_errors, 0.0) + 1
        again = await call(session, "search", {"query": "x", "knowledge_bases": "handbook"})
        assert again.is_error and "unavailable" in text_of(again), text_of(again)
