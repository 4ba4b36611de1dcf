"""No key reaches what it may not use, through any route: a walk of the whole OpenAPI schema.

A victim's data sits next to the attackers': a knowledge base ``secret`` holding a secret
sentence, a file chat with another secret, a conversation, its message and their ingestion
jobs. Two attacker keys (one limited to knowledge base ``a``, one unlimited but not admin)
call every operation of ``/openapi.json``; every input the schema marks as a reference
(``x-zhiku-refers-to``) is pointed in turn at the victim's thing and at a twin that does not
exist. The two answers must have the same status (and the same error, names aside), and no
answer may hold a secret or its file name. Afterwards the victim's data is intact.

The operations and fields come from the schema, so a new route or field is walked without
editing this test; a separate check fails when an input that looks like a reference is not
marked (and so would not be walked).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from services.gateway.schemas.refs import REF_EXTENSION

from .openapi_probes import Operation, Probe, Schema, Slot
from .stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "scope-admin-key"
SECRET_KB = "secret"
SECRET_FILE = "vault-plan.txt"
SECRET_TEXT = "The vault code of Project Heron is zebra-4471."
CHAT_FILE = "chat-private.txt"
CHAT_TEXT = "The heliotrope shipment leaves on pier 88 at dawn."
CONVERSATION_TITLE = "Heron private planning"
QUESTION = "What is the vault code of Project Heron? (ref Q-77123)"
ALLOWED_KB = "a"
ALLOWED_FILE = "a-notes.txt"
# Inputs that look like references: each must carry the marker, or the walk would miss it.
LOOKS_LIKE_A_REFERENCE = re.compile(
    r"(^|_)(kb|knowledge_base|knowledge_bases|knowledge_base_name|knowledge_id|file_chat_id|prev_id|"
    r"conversation_id|message_id|job_id)$"
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def settle(client: httpx.AsyncClient, job_id: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(ADMIN))).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not settle")


async def upload(client: httpx.AsyncClient, kb: str, name: str, text: str) -> str:
    reply = await client.post(
        f"/v1/knowledge_bases/{kb}/files", files={"files": (name, text.encode())}, headers=bearer(ADMIN)
    )
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["jobs"][0]["id"]
    assert (await settle(client, job_id))["state"] == "succeeded"
    return job_id


async def make_key(client: httpx.AsyncClient, name: str, **fields: Any) -> str:
    reply = await client.post("/v1/keys", json={"name": name, **fields}, headers=bearer(ADMIN))
    assert reply.status_code == 201, reply.text
    return reply.json()["key"]


@dataclass
class Belongings:
    """What one key made: a file chat, a conversation with one answered turn, a job."""

    file_chat: str
    conversation: str
    message: str
    job: str


async def belongings(
    client: httpx.AsyncClient, key: str, kb: str, file: tuple[str, str], job: str, question: str
) -> Belongings:
    chat = await client.post(
        "/v1/file_chats", files={"files": (file[0], file[1].encode())}, headers=bearer(key)
    )
    assert chat.status_code == 201 and chat.json()["files"][0]["state"] == "succeeded", chat.text
    conversation = await client.post(
        "/v1/conversations",
        json={"title": CONVERSATION_TITLE if kb == SECRET_KB else "mine", "knowledge_base": kb},
        headers=bearer(key),
    )
    assert conversation.status_code == 201, conversation.text
    answer = await client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": question}],
            "conversation_id": conversation.json()["id"],
        },
        headers=bearer(key),
    )
    assert answer.status_code == 200, answer.text
    return Belongings(chat.json()["id"], conversation.json()["id"], answer.json()["message_id"], job)


@dataclass
class World:
    stack: Stack
    victim: str
    victims: Belongings
    victim_chat_job: str
    attackers: dict[str, tuple[str, Belongings]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with (
        running_stack(tmp_path_factory.mktemp("scope"), api_keys=[ADMIN]) as stack,
        httpx.AsyncClient(base_url=stack.url, timeout=120) as client,
    ):
        for kb in (ALLOWED_KB, SECRET_KB):
            created = await client.post("/v1/knowledge_bases", json={"name": kb}, headers=bearer(ADMIN))
            assert created.status_code == 201, created.text
        secret_job = await upload(client, SECRET_KB, SECRET_FILE, SECRET_TEXT)
        allowed_job = await upload(client, ALLOWED_KB, ALLOWED_FILE, "The cafeteria opens at nine.")
        victim = await make_key(client, "victim")
        victims = await belongings(client, victim, SECRET_KB, (CHAT_FILE, CHAT_TEXT), secret_job, QUESTION)
        jobs = await client.get(f"/v1/knowledge_bases/tmp_{victims.file_chat}/jobs", headers=bearer(ADMIN))
        attackers = {}
        for name, fields in (("limited", {"knowledge_bases": [ALLOWED_KB]}), ("unlimited", {})):
            key = await make_key(client, name, **fields)
            own = await belongings(
                client, key, ALLOWED_KB, ("mine.txt", "My own notes."), allowed_job, "When does it open?"
            )
            attackers[name] = (key, own)
        yield World(stack, victim, victims, jobs.json()["data"][0]["id"], attackers)


@dataclass(frozen=True)
class Target:
    """One thing of the victim's that an attacker may not reach, and a twin that does not exist."""

    kind: str
    secret: Any
    twin: Any


def targets(world: World, attacker: str) -> list[Target]:
    victim = world.victims
    temp, no_temp = f"tmp_{victim.file_chat}", f"tmp_{uuid.uuid4().hex}"
    found = [
        Target("knowledge_base", temp, no_temp),
        Target("knowledge_bases", [temp], [no_temp]),
        Target("model", f"kb:{temp}", f"kb:{no_temp}"),
        Target("file_chat", victim.file_chat, uuid.uuid4().hex),
        Target("conversation", victim.conversation, uuid.uuid4().hex),
        Target("message", victim.message, uuid.uuid4().hex),
        Target("job", world.victim_chat_job, str(uuid.uuid4())),
    ]
    if attacker == "limited":  # the secret knowledge base is forbidden to this key only
        found += [
            Target("knowledge_base", SECRET_KB, "nosuchkb"),
            Target("knowledge_bases", [SECRET_KB], ["nosuchkb"]),
            Target("model", f"kb:{SECRET_KB}", "kb:nosuchkb"),
            Target("job", victim.job, str(uuid.uuid4())),
        ]
    return found


def secrets_of(attacker: str) -> list[str]:
    """Strings the attacker's answers must never hold."""
    private = [CHAT_TEXT.split()[1], "pier 88", CHAT_FILE, CONVERSATION_TITLE, "Q-77123"]
    if attacker == "limited":
        private += ["zebra-4471", SECRET_FILE]
    return private


def allowed_values(own: Belongings) -> dict[str, Any]:
    return {
        "knowledge_base": ALLOWED_KB,
        "knowledge_bases": [ALLOWED_KB],
        "model": f"kb:{ALLOWED_KB}",
        "file_chat": own.file_chat,
        "conversation": own.conversation,
        "message": own.message,
        "job": own.job,
    }


def destructive(operation: Operation) -> bool:
    return operation.method == "delete" or "delete" in operation.template


def variants(
    schema: Schema, operation: Operation, slot: Slot, value: Any, allowed: dict[str, Any]
) -> list[Probe]:
    """``slot`` set to ``value`` three ways: alone (with the required inputs), beside the
    knowledge-base inputs set to allowed values, and beside every other input set so."""
    others = [other for other in schema.slots(operation) if other != slot]
    kb_kinds = ("knowledge_base", "model")
    ways = [
        [other for other in others if other.required],
        [other for other in others if other.required or other.kind in kb_kinds],
        others,
    ]
    probes: dict[tuple, Probe] = {}
    for chosen in ways:
        values = {other: allowed[other.kind] for other in chosen}
        values[slot] = value
        probe = schema.build(operation, values)
        probes.setdefault(probe.key(), probe)
    return list(probes.values())


async def send(client: httpx.AsyncClient, key: str, probe: Probe) -> httpx.Response:
    return await client.request(
        probe.method,
        probe.path,
        params=probe.params or None,
        json=probe.json,
        data=probe.data,
        files=probe.files or None,
        headers=bearer(key),
    )


def names_in(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [part for item in values for part in {str(item), str(item).removeprefix("kb:")}]


def normalized(response: httpx.Response, value: Any) -> str:
    text = response.text
    for name in sorted(names_in(value), key=len, reverse=True):
        text = text.replace(name, "<REF>")
    return text


def leaked(where: str, probe: Probe, response: httpx.Response, forbidden: list[str]) -> list[str]:
    """Secrets in the answer that the request did not bring itself (a file name asked for is
    echoed in "file ... does not exist": that tells the caller nothing new)."""
    asked = repr(probe)
    found = [word for word in forbidden if word in response.text and word not in asked]
    return [f"{where}: {word!r} in the answer" for word in found]


def is_refusal(response: httpx.Response) -> bool:
    """An error status, or Chatchat's envelope with a non-200 code (HTTP 200 there)."""
    if response.status_code >= 400:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and set(body) == {"code", "msg", "data"} and body["code"] != 200


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def schema(world: World) -> Schema:
    async with httpx.AsyncClient(base_url=world.stack.url) as client:
        spec = (await client.get("/openapi.json")).json()
    return Schema(spec, hints={"file_name": SECRET_FILE, "file_names": [SECRET_FILE]})


async def test_every_input_that_looks_like_a_reference_is_marked(schema: Schema) -> None:
    unmarked = sorted(
        {
            f"{operation.name}: {name}"
            for operation in schema.operations()
            for name, prop in schema.request_properties(operation)
            if LOOKS_LIKE_A_REFERENCE.search(name)
            and schema.resolve(prop).get("type") not in ("boolean", "integer", "number")
            and REF_EXTENSION not in prop
        }
    )
    assert unmarked == [], (
        f"mark these with {REF_EXTENSION} (services/gateway/schemas/refs.py):\n" + "\n".join(unmarked)
    )
    assert sum(len(schema.slots(operation)) for operation in schema.operations()) >= 40


async def compare(
    client: httpx.AsyncClient,
    key: str,
    where: str,
    pair: tuple[Probe, Probe],
    target: Target,
    forbidden: list[str],
) -> list[str]:
    """The victim's thing and its non-existent twin: the same status, the same refusal."""
    secret_probe, twin_probe = pair
    secret_reply = await send(client, key, secret_probe)
    twin_reply = await send(client, key, twin_probe)
    problems = leaked(where, secret_probe, secret_reply, forbidden)
    if secret_reply.status_code != twin_reply.status_code:
        problems.append(
            f"{where}: status {secret_reply.status_code} but {twin_reply.status_code} "
            f"for one that does not exist ({secret_reply.text[:200]})"
        )
    elif is_refusal(twin_reply) and normalized(secret_reply, target.secret) != normalized(
        twin_reply, target.twin
    ):
        problems.append(f"{where}: {secret_reply.text[:200]} but {twin_reply.text[:200]}")
    return problems


@pytest.mark.parametrize("attacker", ["limited", "unlimited"])
async def test_no_key_reaches_what_it_may_not_use(world: World, schema: Schema, attacker: str) -> None:
    key, own = world.attackers[attacker]
    allowed = allowed_values(own)
    forbidden = secrets_of(attacker)
    walked: list[str] = []
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=world.stack.url, timeout=120) as client:
        for operation in sorted(schema.operations(), key=destructive):  # deletions last
            if not destructive(operation):  # the plain call, with the attacker's own things
                plain = schema.build(
                    operation, {slot: allowed[slot.kind] for slot in schema.slots(operation)}
                )
                problems += leaked(
                    f"{operation.name} plain", plain, await send(client, key, plain), forbidden
                )
            for slot in schema.slots(operation):
                for target in (t for t in targets(world, attacker) if t.kind == slot.kind):
                    where = f"{operation.name} {slot.where}:{slot.name or 'body'}={target.secret!r}"
                    pairs = zip(
                        variants(schema, operation, slot, target.secret, allowed),
                        variants(schema, operation, slot, target.twin, allowed),
                        strict=True,
                    )
                    for pair in pairs:
                        walked.append(where)
                        problems += await compare(client, key, where, pair, target, forbidden)
    assert problems == [], "\n".join(problems)
    assert len(walked) >= 50, walked


async def test_the_victims_things_are_untouched(world: World, schema: Schema) -> None:
    """Runs after the walks: nothing the attackers sent changed the victim's data."""
    victim = world.victims
    async with httpx.AsyncClient(base_url=world.stack.url, timeout=120) as client:
        files = (await client.get(f"/v1/knowledge_bases/{SECRET_KB}/files", headers=bearer(ADMIN))).json()[
            "data"
        ]
        assert [(f["file_name"], f["state"]) for f in files] == [(SECRET_FILE, "succeeded")]
        conversation = await client.get(
            f"/v1/conversations/{victim.conversation}", headers=bearer(world.victim)
        )
        assert conversation.status_code == 200
        body = conversation.json()
        assert body["title"] == CONVERSATION_TITLE and len(body["messages"]) == 2
        assert body["messages"][1]["feedback"] is None
        chat = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "When does the shipment leave?"}],
                "file_chat_id": victim.file_chat,
            },
            headers=bearer(world.victim),
        )
        assert chat.status_code == 200 and chat.json()["citations"][0]["file_name"] == CHAT_FILE
        chat_files = await client.get(
            f"/v1/knowledge_bases/tmp_{victim.file_chat}/files", headers=bearer(world.victim)
        )
        assert [f["file_name"] for f in chat_files.json()["data"]] == [CHAT_FILE]
