"""Document access lists survive an embedding-model migration, over the real stack.

A migrated knowledge base searches a collection of its own name (``<kb>__v2``); the searches
still run in the caller's name (the guard decides on the knowledge base the request names),
so a person outside a file's list does not see it there either: not in search, not in a chat's
citations. A list changed while the migration copies files, and one changed after the switch,
hold in the new collection. A search whose collection is not one of the knowledge base it
names is refused by the guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
import pytest_asyncio

from services.gateway.access import Principal
from services.gateway.authz import acting_as
from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc

from .stack import Stack, running_stack
from .test_migration import E5_ID, SLOW_DOCS, eventually_gone

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "migration-acl-admin-key"
KB = "policies"
PASSWORD = "correct horse battery staple"
SECRET = "salaries.txt"  # the finance group only (and alice, its uploader)
SECRET_QUESTION = "What is the salary band of a senior engineer?"
SECRET_TEXT = "zebra-7731"
SECRET_DOC = (
    "Salary bands. A senior engineer earns between 90k and 120k a year. "
    f"The payroll code word is {SECRET_TEXT}.\n"
).encode()
MEMO = "merger-memo.txt"  # open at first; restricted to carol while the migration runs
MEMO_QUESTION = "Which company are we merging with next spring?"
MEMO_TEXT = "Northwind Traders"
MEMO_DOC = f"Merger memo. Next spring we merge with {MEMO_TEXT}; keep it quiet until announced.\n".encode()
LUNCH = "canteen.txt"  # open; restricted to carol after the switch
LUNCH_QUESTION = "When does the canteen serve lunch?"
LUNCH_DOC = b"Canteen hours. The canteen serves lunch from 11:30 to 14:00 on weekdays.\n"
# person -> (role on the knowledge base, groups)
PEOPLE = {"alice": ("editor", ()), "bob": ("viewer", ()), "carol": ("viewer", ("finance",))}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def admin(
    client: httpx.AsyncClient, method: str, path: str, body: dict | None = None
) -> httpx.Response:
    reply = await client.request(method, path, json=body, headers=bearer(ADMIN))
    assert reply.status_code < 300, reply.text
    return reply


async def people(client: httpx.AsyncClient, url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Real users with their roles and groups, each with an API key they made: (keys, ids)."""
    keys, ids = {}, {}
    for name, (role, groups) in PEOPLE.items():
        email = f"{name}@example.com"
        user = (await admin(client, "POST", "/v1/users", {"email": email, "password": PASSWORD})).json()
        ids[name] = user["id"]
        for group in groups:
            await admin(client, "POST", "/v1/groups", {"name": group, "display_name": group.title()})
            await admin(client, "PUT", f"/v1/groups/{group}/members/{user['id']}")
        await admin(
            client,
            "PUT",
            f"/v1/knowledge_bases/{KB}/members",
            {"kind": "user", "id": user["id"], "role": role},
        )
        async with httpx.AsyncClient(base_url=url, timeout=60) as browser:
            signed_in = await browser.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert signed_in.status_code == 200, signed_in.text
            made = await browser.post(
                "/v1/keys", json={"name": name}, headers={"X-CSRF-Token": signed_in.json()["csrf_token"]}
            )
            assert made.status_code == 201, made.text
            keys[name] = made.json()["key"]
    return keys, ids


async def settle(client: httpx.AsyncClient, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(ADMIN))).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not settle")


async def upload(
    client: httpx.AsyncClient, key: str, name: str, content: bytes, access: str | None = None
) -> None:
    reply = await client.post(
        f"/v1/knowledge_bases/{KB}/files",
        files={"files": (name, content)},
        data={"access": access} if access is not None else {},
        headers=bearer(key),
    )
    assert reply.status_code == 202, reply.text
    for job in reply.json()["jobs"]:
        assert (await settle(client, job["id"]))["state"] == "succeeded"


async def found(client: httpx.AsyncClient, key: str, question: str) -> set[str]:
    reply = await client.post(
        f"/v1/knowledge_bases/{KB}/search", json={"query": question, "top_k": 5}, headers=bearer(key)
    )
    assert reply.status_code == 200, reply.text
    return {hit["file_name"] for hit in reply.json()["data"]}


async def set_access(client: httpx.AsyncClient, key: str, file_name: str, access: dict) -> None:
    reply = await client.put(
        f"/v1/knowledge_bases/{KB}/files/{file_name}/access", json=access, headers=bearer(key)
    )
    assert reply.status_code == 200, reply.text


async def copied(retrieve: retrieve_pb2_grpc.RetrieveServiceStub, collection: str, file_name: str) -> None:
    """Wait until ``collection`` holds points of ``file_name`` (the migration copied it)."""
    deadline = time.monotonic() + 120
    request = retrieve_pb2.SearchRequest(
        collection=collection,
        query_text=MEMO_QUESTION,
        mode=retrieve_pb2.SEARCH_MODE_SPARSE,
        top_k=1,
        file_names=[file_name],
    )
    while True:
        try:
            if (await retrieve.Search(request, timeout=30)).hits:
                return
        except grpc.aio.AioRpcError as error:  # not created yet
            assert error.code() is grpc.StatusCode.NOT_FOUND, error
        assert time.monotonic() < deadline, f"{file_name} never reached {collection}"
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(
        tmp_path_factory.mktemp("migration-acl"),
        embed={"extra_models": ["e5"]},
        ingest={"migration_drop_delay_s": 1.0, "sweep_interval_s": 0.5},
        api_keys=[ADMIN],
        session_cookie_secure=False,
    ) as running:
        yield running


async def test_a_migrated_knowledge_base_keeps_every_access_list(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=120) as client,
        grpc.aio.insecure_channel(stack.addresses["retrieve"]) as channel,
    ):
        await admin(client, "POST", "/v1/knowledge_bases", {"name": KB})
        keys, ids = await people(client, stack.url)
        await upload(client, keys["alice"], SECRET, SECRET_DOC, '{"groups": ["finance"]}')
        await upload(client, ADMIN, MEMO, MEMO_DOC)
        await upload(client, ADMIN, LUNCH, LUNCH_DOC)
        # Filler the migration copies after the files above (names sort after them), so the
        # list change below lands while it still runs.
        filler = await client.post(
            f"/v1/knowledge_bases/{KB}/files",
            files=[("files", item) for item in SLOW_DOCS.items()],
            headers=bearer(ADMIN),
        )
        assert filler.status_code == 202, filler.text
        for queued in filler.json()["jobs"]:
            assert (await settle(client, queued["id"]))["state"] == "succeeded"
        assert SECRET not in await found(client, keys["bob"], SECRET_QUESTION)
        assert MEMO in await found(client, keys["bob"], MEMO_QUESTION)

        started = await client.post(
            f"/v1/knowledge_bases/{KB}/migrate", json={"embed_model": "e5"}, headers=bearer(ADMIN)
        )
        assert started.status_code == 202, started.text
        job = started.json()
        # During the migration, once the memo is copied into the new collection: the memo
        # becomes carol's only (the admin key has no user to keep on the list). The change
        # must reach the copied points too.
        retrieve = retrieve_pb2_grpc.RetrieveServiceStub(channel)
        await copied(retrieve, f"{KB}__v2", MEMO)
        await set_access(client, ADMIN, MEMO, {"users": [ids["carol"]], "groups": []})
        during = (await client.get(f"/v1/knowledge_bases/{KB}", headers=bearer(ADMIN))).json()
        assert during["migration_job"] == job["id"], "the migration ended before the list changed"
        assert MEMO not in await found(client, keys["bob"], MEMO_QUESTION)

        finished = await settle(client, job["id"])
        assert finished["state"] == "succeeded", (finished["error"], stack.worker_log.read_text()[-3000:])
        after = (await client.get(f"/v1/knowledge_bases/{KB}", headers=bearer(ADMIN))).json()
        assert after["collection"] == f"{KB}__v2" and E5_ID in after["embed_model"]
        await eventually_gone(retrieve, KB)  # only the new collection answers from here on

        # Search: bob (on no list) sees neither restricted file; carol sees both; the hits are
        # labelled with the knowledge base, not its collection.
        assert SECRET not in await found(client, keys["bob"], SECRET_QUESTION)
        assert MEMO not in await found(client, keys["bob"], MEMO_QUESTION)
        assert SECRET in await found(client, keys["carol"], SECRET_QUESTION)
        assert MEMO in await found(client, keys["carol"], MEMO_QUESTION)
        assert SECRET in await found(client, keys["alice"], SECRET_QUESTION)  # its uploader

        # Chat: bob's answer neither cites nor quotes the hidden files; carol's cites them,
        # with links to the knowledge base's files.
        for question, hidden, text in (
            (SECRET_QUESTION, SECRET, SECRET_TEXT),
            (MEMO_QUESTION, MEMO, MEMO_TEXT),
        ):
            chat = {"model": f"kb:{KB}", "messages": [{"role": "user", "content": question}]}
            bobs = await client.post("/v1/chat/completions", json=chat, headers=bearer(keys["bob"]))
            assert bobs.status_code == 200, bobs.text
            assert hidden not in {c["file_name"] for c in bobs.json()["citations"]}
            assert text not in bobs.text
            carols = await client.post("/v1/chat/completions", json=chat, headers=bearer(keys["carol"]))
            assert carols.status_code == 200, carols.text
            cited = {c["file_name"]: c for c in carols.json()["citations"]}
            assert hidden in cited and text in carols.text
            assert cited[hidden]["url"].startswith(f"/v1/knowledge_bases/{KB}/files/")

        # After the switch: a list change holds in the new collection at once.
        assert LUNCH in await found(client, keys["bob"], LUNCH_QUESTION)
        await set_access(client, keys["alice"], LUNCH, {"users": [ids["carol"]], "groups": []})
        assert LUNCH not in await found(client, keys["bob"], LUNCH_QUESTION)
        assert LUNCH in await found(client, keys["carol"], LUNCH_QUESTION)
        await set_access(client, ADMIN, MEMO, {"users": [], "groups": []})  # open again
        assert MEMO in await found(client, keys["bob"], MEMO_QUESTION)

        # The points themselves carry the lists: a restricted search of the new collection
        # with bob's tokens (retrieve called directly) finds no hidden file.
        reply = await retrieve.Search(
            retrieve_pb2.SearchRequest(
                collection=f"{KB}__v2",
                query_text="salary senior engineer canteen lunch merge spring",
                mode=retrieve_pb2.SEARCH_MODE_SPARSE,
                top_k=50,
                reader_acl=[f"user:{ids['bob']}"],
                enforce_acl=True,
            ),
            timeout=30,
        )
        searched = {hit.file_name for hit in reply.hits}
        assert MEMO in searched and not searched & {SECRET, LUNCH}, searched


async def test_the_guard_refuses_a_collection_of_another_knowledge_base(stack: Stack) -> None:
    """Access is decided on the knowledge base a search names: its collection must be one
    of that knowledge base's (its name or ``<kb>__v<n>``), whoever asks."""
    app = stack.app
    assert app is not None
    clients = app.state.clients
    reader = Principal(key_id="k", name="reader", admin=False, knowledge_bases=None, rate_limit_per_minute=0)
    with acting_as(reader), pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.retrieve.Search(
            retrieve_pb2.SearchRequest(
                knowledge_base=KB, collection="someone-elses", query_text="x", top_k=1
            ),
            timeout=10,
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a collection of knowledge base" in (refused.value.details() or "")
