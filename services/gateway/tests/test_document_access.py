"""Document access lists over the real stack, on both vector backends (Qdrant Edge and the
qdrant-client backend): a person never sees a file outside its list through any route.

Held-out files: three CMRC 2018 articles (one restricted to the ``finance`` group) and the
real ``test.docx`` (restricted to one user), uploaded through the native route with the
``access`` form field. The people are real users (made by the admin, in real groups, sharing
the knowledge base as editors or viewers) calling with API keys they made after signing in;
the environment key is an admin.

Checked for a reader outside the lists: native search (top_k still full), OpenAI chat with a
``kb:`` model (citations and reply), Chatchat ``search_docs``, ``knowledge_base_chat``,
``list_files`` and ``download_doc``, the agent tool ``search_knowledge_base``, MCP ``search``
and ``get_file_content``, file listings, downloads and access routes (404 as if missing),
another person's file chat. Changing a list takes effect at once and calls no embedding.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from services.common.metrics import GRPC_REQUESTS
from services.gateway.access import Principal
from services.gateway.agent.tools import ToolContext, build_registry
from services.gateway.authz import acting_as

from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

EVALDATA = Path(
    os.environ.get("ZHIKU_EVALDATA") or Path(__file__).resolve().parents[3].parent / "shared" / "evaldata"
)
if not EVALDATA.is_dir():  # a worktree under /work/wt: the data sits next to the main checkout
    EVALDATA = Path(__file__).resolve().parents[4].parent / "shared" / "evaldata"

ADMIN = "doc-acl-admin-key"
KB = "handbook"
RAILWAY = "guangmao-railway.txt"  # CMRC DEV_2, finance group only
AUTOGEN = "autogen.docx"  # evaldata docs/test.docx, carol only (plus its uploader, alice)
OPEN_FILES = {"samurai-warriors.txt": "DEV_0", "gongs.txt": "DEV_1", "dalailong-railway.txt": "DEV_3"}
RAILWAY_QUESTION = "广茂铁路全长多少公里？"
RAILWAY_SECRET = "364.6"  # the answer: appears only in the restricted article
AUTOGEN_QUESTION = "AutoGen multi-agent conversation framework"
AUTOGEN_SECRET = "314b0a30-5b04-470b-b9f7-eed2c2bec74a"  # a UUID inside the document
HIDDEN = (RAILWAY, AUTOGEN, RAILWAY_SECRET, AUTOGEN_SECRET)


@dataclass(frozen=True)
class Person:
    role: str  # on the knowledge base
    groups: tuple[str, ...] = ()

    def email(self, name: str) -> str:
        return f"{name}@example.com"


PASSWORD = "correct horse battery staple"
PEOPLE = {
    "olga": Person("owner"),  # the knowledge base's owner: reads every file
    "alice": Person("editor"),  # uploads the restricted files
    "bob": Person("editor", ("sales",)),  # on no list: an editor, so file rules are reached
    "carol": Person("viewer", ("finance",)),
}


@dataclass
class World:
    stack: Stack
    keys: dict[str, str]  # person -> an API key they made
    ids: dict[str, str]  # person -> user id
    backend: str
    jobs: dict[str, str]  # file name -> the job that indexed it

    def principal(self, name: str) -> Principal:
        """The person as the gateway resolves them (for calls made below the HTTP routes)."""
        return Principal(
            key_id=f"test-{name}",
            name=name,
            admin=False,
            knowledge_bases=None,
            rate_limit_per_minute=0,
            user_id=self.ids[name],
            email=PEOPLE[name].email(name),
            groups=frozenset(PEOPLE[name].groups),
        )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cmrc_article(article_id: str) -> str:
    data = json.loads((EVALDATA / "cmrc2018" / "cmrc2018_dev.squad.json").read_text(encoding="utf-8"))
    article = next(a for a in data["data"] if a["id"] == article_id)
    return "\n\n".join(paragraph["context"] for paragraph in article["paragraphs"])


async def made_by_admin(client: httpx.AsyncClient, method: str, path: str, body: dict) -> dict:
    reply = await client.request(method, path, json=body, headers=bearer(ADMIN))
    assert reply.status_code in (200, 201), reply.text
    answer: dict = reply.json()
    return answer


async def people(client: httpx.AsyncClient, url: str) -> tuple[dict[str, str], dict[str, str]]:
    """The users, their groups and roles on the knowledge base, and a key each made after
    signing in (a key belongs to its maker): (keys, user ids) by name."""
    keys, ids = {}, {}
    for name, person in PEOPLE.items():
        user = await made_by_admin(
            client, "POST", "/v1/users", {"email": person.email(name), "password": PASSWORD}
        )
        ids[name] = user["id"]
        for group in person.groups:
            await made_by_admin(client, "POST", "/v1/groups", {"name": group, "display_name": group.title()})
            joined = await client.put(f"/v1/groups/{group}/members/{user['id']}", headers=bearer(ADMIN))
            assert joined.status_code in (200, 204), joined.text
        await made_by_admin(
            client,
            "PUT",
            f"/v1/knowledge_bases/{KB}/members",
            {"kind": "user", "id": user["id"], "role": person.role},
        )
        async with httpx.AsyncClient(base_url=url, timeout=60) as browser:
            signed_in = await browser.post(
                "/v1/auth/login", json={"email": person.email(name), "password": PASSWORD}
            )
            assert signed_in.status_code == 200, signed_in.text
            made = await browser.post(
                "/v1/keys",
                json={"name": f"{name}'s key"},
                headers={"X-CSRF-Token": signed_in.json()["csrf_token"]},
            )
            assert made.status_code == 201, made.text
            assert made.json()["owner"] == user["id"]
            keys[name] = made.json()["key"]
    return keys, ids


async def settle(client: httpx.AsyncClient, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(ADMIN))).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not settle")


async def upload(
    client: httpx.AsyncClient, key: str, name: str, content: bytes, access: dict | None = None
) -> str:
    form = {"access": json.dumps(access)} if access is not None else {}
    reply = await client.post(
        f"/v1/knowledge_bases/{KB}/files", files={"files": (name, content)}, data=form, headers=bearer(key)
    )
    assert reply.status_code == 202, reply.text
    job = await settle(client, reply.json()["jobs"][0]["id"])
    assert job["state"] == "succeeded", job
    return str(job["id"])


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["edge", "qdrant"])
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    backend = request.param
    data_dir = tmp_path_factory.mktemp(f"doc-acl-{backend}")
    retrieve = {"backend": "qdrant", "qdrant_path": str(data_dir / "qdrant")} if backend == "qdrant" else None
    async with (
        running_stack(
            data_dir,
            ingest={"max_file_mb": 1},
            retrieve=retrieve,
            api_keys=[ADMIN],
            session_cookie_secure=False,
        ) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=120) as client,
    ):
        created = await client.post("/v1/knowledge_bases", json={"name": KB}, headers=bearer(ADMIN))
        assert created.status_code == 201, created.text
        keys, ids = await people(client, stack.url)
        jobs: dict[str, str] = {}
        for name, article in OPEN_FILES.items():
            jobs[name] = await upload(client, ADMIN, name, cmrc_article(article).encode())
        jobs[RAILWAY] = await upload(
            client, keys["alice"], RAILWAY, cmrc_article("DEV_2").encode(), {"groups": ["finance"]}
        )
        docx = (EVALDATA / "docs" / "test.docx").read_bytes()
        jobs[AUTOGEN] = await upload(client, keys["alice"], AUTOGEN, docx, {"users": [ids["carol"]]})
        yield World(stack, keys, ids, backend, jobs)


@pytest_asyncio.fixture(loop_scope="module")
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.stack.url, timeout=120) as http:
        yield http


def leaks(payload: Any) -> list[str]:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return [secret for secret in HIDDEN if secret in text]


async def search_files(client: httpx.AsyncClient, key: str, query: str, top_k: int = 3) -> list[dict]:
    reply = await client.post(
        f"/v1/knowledge_bases/{KB}/search", json={"query": query, "top_k": top_k}, headers=bearer(key)
    )
    assert reply.status_code == 200, reply.text
    hits: list[dict] = reply.json()["data"]
    return hits


async def test_search_shows_each_person_only_their_documents(world: World, client: httpx.AsyncClient) -> None:
    keys = world.keys
    assert (await search_files(client, keys["alice"], RAILWAY_QUESTION))[0]["file_name"] == RAILWAY
    assert (await search_files(client, ADMIN, AUTOGEN_QUESTION))[0]["file_name"] == AUTOGEN
    assert (await search_files(client, keys["carol"], RAILWAY_QUESTION))[0]["file_name"] == RAILWAY
    assert (await search_files(client, keys["carol"], AUTOGEN_QUESTION))[0]["file_name"] == AUTOGEN
    for question in (RAILWAY_QUESTION, AUTOGEN_QUESTION):
        hits = await search_files(client, keys["bob"], question)
        # The hidden chunks rank higher, yet top_k is filled with chunks bob may read.
        assert len(hits) == 3 and {hit["file_name"] for hit in hits} <= set(OPEN_FILES), hits
        assert leaks(hits) == []
    hits = await search_files(client, keys["alice"], AUTOGEN_QUESTION)  # alice uploaded it
    assert hits[0]["file_name"] == AUTOGEN
    # The knowledge base's owner is on no list and reads everything.
    assert (await search_files(client, keys["olga"], AUTOGEN_QUESTION))[0]["file_name"] == AUTOGEN
    assert (await search_files(client, keys["olga"], RAILWAY_QUESTION))[0]["file_name"] == RAILWAY


async def test_chat_routes_never_cite_or_quote_hidden_text(world: World, client: httpx.AsyncClient) -> None:
    bob = bearer(world.keys["bob"])
    question = [{"role": "user", "content": RAILWAY_QUESTION}]
    allowed = await client.post(
        "/v1/chat/completions", json={"model": f"kb:{KB}", "messages": question}, headers=bearer(ADMIN)
    )
    assert allowed.status_code == 200, allowed.text
    assert RAILWAY in [c["file_name"] for c in allowed.json()["citations"]]

    chat = await client.post(
        "/v1/chat/completions", json={"model": f"kb:{KB}", "messages": question}, headers=bob
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["citations"] and leaks(chat.json()) == []
    with_kb = await client.post(
        "/v1/chat/completions",
        json={"model": "extractive", "messages": question, "knowledge_base": KB, "top_k": 5},
        headers=bob,
    )
    assert with_kb.status_code == 200 and leaks(with_kb.json()) == []

    docs = await client.post(
        "/knowledge_base/search_docs",
        json={"knowledge_base_name": KB, "query": RAILWAY_QUESTION},
        headers=bob,
    )
    assert docs.status_code == 200 and len(docs.json()) == 3 and leaks(docs.json()) == []
    kb_chat = await client.post(
        "/chat/knowledge_base_chat",
        json={"query": RAILWAY_QUESTION, "knowledge_base_name": KB, "model_name": "extractive"},
        headers=bob,
    )
    assert kb_chat.status_code == 200 and "docs" in kb_chat.text and leaks(kb_chat.text) == []
    admin_chat = await client.post(
        "/chat/knowledge_base_chat",
        json={"query": RAILWAY_QUESTION, "knowledge_base_name": KB, "model_name": "extractive"},
        headers=bearer(ADMIN),
    )
    assert RAILWAY_SECRET in admin_chat.text  # the same route does show it to a reader on the list


async def test_files_outside_the_list_are_missing(world: World, client: httpx.AsyncClient) -> None:
    bob, carol = bearer(world.keys["bob"]), bearer(world.keys["carol"])
    listed = (await client.get(f"/v1/knowledge_bases/{KB}/files", headers=bob)).json()["data"]
    assert {entry["file_name"] for entry in listed} == set(OPEN_FILES)
    all_files = (await client.get(f"/v1/knowledge_bases/{KB}/files", headers=bearer(ADMIN))).json()["data"]
    by_name = {entry["file_name"]: entry for entry in all_files}
    alice_id, carol_id = world.ids["alice"], world.ids["carol"]
    assert by_name[RAILWAY]["access"] == {"users": [alice_id], "groups": ["finance"]}
    assert by_name[AUTOGEN]["access"] == {"users": [carol_id, alice_id], "groups": []}
    assert by_name[RAILWAY]["uploader"] == alice_id and by_name["gongs.txt"]["access"] == {
        "users": [],
        "groups": [],
    }
    carol_sees = {
        e["file_name"]
        for e in (await client.get(f"/v1/knowledge_bases/{KB}/files", headers=carol)).json()["data"]
    }
    assert carol_sees == {*OPEN_FILES, RAILWAY, AUTOGEN}

    missing = await client.get(f"/v1/knowledge_bases/{KB}/files/nope.txt/content", headers=bob)
    assert missing.status_code == 404
    for path in (f"{RAILWAY}/content", f"{RAILWAY}/access", f"{AUTOGEN}/content"):
        hidden = await client.get(f"/v1/knowledge_bases/{KB}/files/{path}", headers=bob)
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["error"]["message"] == missing.json()["error"]["message"].replace(
            "nope.txt", path.split("/")[0]
        )
    put = await client.put(
        f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/access", json={"users": [world.ids["bob"]]}, headers=bob
    )
    assert put.status_code == 404
    deleted = await client.delete(f"/v1/knowledge_bases/{KB}/files/{RAILWAY}", headers=bob)
    assert deleted.status_code == 404
    replaced = await client.post(
        f"/v1/knowledge_bases/{KB}/files", files={"files": (RAILWAY, b"overwritten")}, headers=bob
    )
    assert replaced.status_code == 403 and leaks(replaced.json()["error"]["message"]) == [RAILWAY]
    assert (
        await client.get(f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/content", headers=carol)
    ).status_code == 200

    bob_jobs = (await client.get(f"/v1/knowledge_bases/{KB}/jobs", headers=bob)).json()["data"]
    assert {job["file_name"] for job in bob_jobs} == set(OPEN_FILES)
    hidden_job = await client.get(f"/v1/jobs/{world.jobs[RAILWAY]}", headers=bob)
    assert hidden_job.status_code == 404 and leaks(hidden_job.text) == []
    assert (await client.get(f"/v1/jobs/{world.jobs['gongs.txt']}", headers=bob)).status_code == 200
    assert (await client.get(f"/v1/jobs/{world.jobs[RAILWAY]}", headers=carol)).status_code == 200

    chatchat_files = (
        await client.get("/knowledge_base/list_files", params={"knowledge_base_name": KB}, headers=bob)
    ).json()
    assert set(chatchat_files["data"]) == set(OPEN_FILES)
    download = await client.get(
        "/knowledge_base/download_doc", params={"knowledge_base_name": KB, "file_name": RAILWAY}, headers=bob
    )
    assert download.json()["code"] == 404 and leaks(download.text) in ([], [RAILWAY])


async def test_agent_tool_and_mcp_filter_too(world: World) -> None:
    # The tool runs on the gateway's own clients and guard (roles from its store), as a person.
    app = world.stack.app
    assert app is not None
    context = ToolContext(settings=app.state.settings, clients=app.state.clients)
    tools = build_registry(app.state.settings)
    with acting_as(world.principal("bob")):
        result = await tools.run(
            "search_knowledge_base", {"query": RAILWAY_QUESTION, "knowledge_bases": [KB], "top_k": 3}, context
        )
    assert len(result.citations) == 3 and leaks(result.text) == [] and leaks(result.citations) == []
    with acting_as(world.principal("carol")):
        carol = await tools.run(
            "search_knowledge_base", {"query": RAILWAY_QUESTION, "knowledge_bases": [KB]}, context
        )
    assert carol.citations[0]["file_name"] == RAILWAY

    async with mcp_session(world.stack.url, world.keys["bob"]) as session:
        found = await session.call_tool(
            "search", {"query": RAILWAY_QUESTION, "knowledge_bases": [KB], "top_k": 3}
        )
        assert not found.is_error and len(found.structured_content["hits"]) == 3
        assert leaks(found.structured_content) == [] and leaks(str(found.content)) == []
        try:
            read = await session.call_tool("get_file_content", {"knowledge_base": KB, "file_name": RAILWAY})
            assert read.is_error and RAILWAY_SECRET not in str(read.content)
        except MCPError as error:
            assert RAILWAY_SECRET not in str(error)


@asynccontextmanager
async def mcp_session(base_url: str, key: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=bearer(key), timeout=120) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_another_persons_file_chat_is_missing(world: World, client: httpx.AsyncClient) -> None:
    made = await client.post(
        "/v1/file_chats",
        files=[("files", (RAILWAY, cmrc_article("DEV_2").encode()))],
        headers=bearer(world.keys["alice"]),
    )
    assert made.status_code == 201, made.text
    question = {
        "messages": [{"role": "user", "content": RAILWAY_QUESTION}],
        "file_chat_id": made.json()["id"],
    }
    own = await client.post("/v1/chat/completions", json=question, headers=bearer(world.keys["alice"]))
    assert own.status_code == 200 and RAILWAY_SECRET in json.dumps(own.json(), ensure_ascii=False)
    other = await client.post("/v1/chat/completions", json=question, headers=bearer(world.keys["bob"]))
    assert other.status_code == 404 and leaks(other.text) == []


def embed_calls() -> float:
    """Embed RPCs the in-process embed service has served (any caller, any outcome)."""
    return sum(
        sample.value
        for metric in GRPC_REQUESTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels.get("service") == "embed"
        and sample.labels.get("method") == "Embed"
    )


async def test_changing_the_list_applies_at_once_without_embedding(
    world: World, client: httpx.AsyncClient
) -> None:
    alice, bob, carol = (bearer(world.keys[name]) for name in ("alice", "bob", "carol"))
    before = embed_calls()
    assert before > 0  # the uploads were embedded by this service
    changed = await client.put(
        f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/access",
        json={"users": ["bob@example.com"], "groups": []},  # an email names the user too
        headers=alice,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"users": [world.ids["bob"], world.ids["alice"]], "groups": []}  # uploader stays
    assert embed_calls() == before  # the points were updated in place

    assert (await search_files(client, world.keys["bob"], RAILWAY_QUESTION))[0]["file_name"] == RAILWAY
    assert RAILWAY not in [
        h["file_name"] for h in await search_files(client, world.keys["carol"], RAILWAY_QUESTION)
    ]
    assert (
        await client.get(f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/access", headers=bob)
    ).status_code == 200
    assert (
        await client.get(f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/content", headers=carol)
    ).status_code == 404

    reopened = await client.put(
        f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/access", json={}, headers=bearer(ADMIN)
    )
    assert reopened.json() == {"users": [], "groups": []}
    assert (await search_files(client, world.keys["carol"], RAILWAY_QUESTION))[0]["file_name"] == RAILWAY
    restored = await client.put(
        f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/access",
        json={"groups": ["finance"]},
        headers=bearer(ADMIN),
    )
    assert restored.json() == {"users": [world.ids["alice"]], "groups": ["finance"]}  # uploader kept
    # Searches embed their queries (kind "query"); no passage was embedded again.
    reindexed = await client.post(f"/v1/knowledge_bases/{KB}/files/{RAILWAY}/reindex", json={}, headers=alice)
    assert reindexed.status_code == 202
    assert (await settle(client, reindexed.json()["jobs"][0]["id"]))["state"] == "succeeded"
    assert (
        leaks(await search_files(client, world.keys["bob"], RAILWAY_QUESTION)) == []
    )  # reindex kept the list


@pytest.mark.parametrize(
    ("access", "fragment"),
    [
        ("not json", "access: "),
        ('{"users": [""]}', "users.0"),
        ('{"users": ["a b"]}', "users.0"),
        ('{"users": "u_a"}', "users"),
        ('{"users": ["u_nobody"]}', "access: user 'u_nobody' does not exist"),
        ('{"groups": ["nobody"]}', "access: group 'nobody' does not exist"),
    ],
)
async def test_a_bad_access_field_is_a_precise_422(
    world: World, client: httpx.AsyncClient, access: str, fragment: str
) -> None:
    reply = await client.post(
        f"/v1/knowledge_bases/{KB}/files",
        files={"files": ("new.txt", b"some text")},
        data={"access": access},
        headers=bearer(ADMIN),
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["param"] == "access" and fragment in reply.json()["error"]["message"]
    names = {
        e["file_name"]
        for e in (await client.get(f"/v1/knowledge_bases/{KB}/files", headers=bearer(ADMIN))).json()["data"]
    }
    assert "new.txt" not in names
