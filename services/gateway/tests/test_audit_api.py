"""The audit trail through the real gateway: admin actions of the native and Chatchat routes
appear in ``GET /v1/audit`` with their actor, client address and user agent, filters and the
cursor work over HTTP, non-admins are refused (and that refusal is itself audited), each entry
is a JSON line on ``zhiku.audit``, and a store that cannot take an entry fails no request.

The first tests run the whole stack (services in-process, a real Celery worker, uvicorn); the
rest need only the gateway and its store (service addresses dead), as nothing there reaches a
service."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from services.common.logging import JsonFormatter
from services.gateway.app import create_app

from .stack import Stack, running_stack
from .support import asgi_client, gateway_settings

ROOT = {"Authorization": "Bearer root-key"}
CLIENT = {"X-Forwarded-For": "198.51.100.23", "User-Agent": "audit-test/1.0"}
ROOT_ACTOR = {"type": "key", "id": "env-0", "name": "environment key 1"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def trail(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every matching entry, newest first, following the cursor through all pages."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await client.get(
            "/v1/audit", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert page.status_code == 200, page.text
        entries += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return entries


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Path]]:
    data_dir = tmp_path_factory.mktemp("audit")
    root = data_dir / "mounted"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "pumps.md").write_text("Pump one is primed by hand and runs at low speed.")
    ingest = {"sources_root": root, "sources_key": Fernet.generate_key().decode()}
    async with running_stack(data_dir, ingest=ingest, api_keys=["root-key"]) as running:
        yield running, data_dir


@pytest.mark.asyncio(loop_scope="module")
async def test_actions_of_every_route_family_are_audited(
    stack: tuple[Stack, Path], caplog: pytest.LogCaptureFixture
) -> None:
    running, _ = stack
    kb = f"aud-{uuid.uuid4().hex[:6]}"
    started = time.time()
    caplog.set_level(logging.INFO, logger="zhiku.audit")
    async with httpx.AsyncClient(base_url=running.url, timeout=120, headers={**ROOT, **CLIENT}) as client:
        assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
        upload = await client.post(
            f"/v1/knowledge_bases/{kb}/files",
            files=[
                ("files", ("leave.md", b"Annual leave: two weeks.")),
                ("files", ("rota.md", b"Night shifts rotate weekly.")),
            ],
        )
        assert upload.status_code == 202, upload.text
        job_id, rota_job_id = (job["id"] for job in upload.json()["jobs"])
        assert (await client.post(f"/v1/knowledge_bases/{kb}/files/leave.md/reindex")).status_code == 202
        assert (await client.delete(f"/v1/knowledge_bases/{kb}/files/leave.md")).status_code == 204
        # Chatchat's routes: upload (waits for ingestion), then delete.
        chatchat = await client.post(
            "/knowledge_base/upload_docs",
            data={"knowledge_base_name": kb},
            files=[("files", ("faq.txt", b"Q: refunds? A: within five business days."))],
        )
        assert chatchat.status_code == 200 and chatchat.json()["data"]["failed_files"] == {}, chatchat.text
        updated = await client.post(
            "/knowledge_base/update_docs", json={"knowledge_base_name": kb, "file_names": ["faq.txt"]}
        )
        assert updated.json()["data"]["failed_files"] == {}, updated.text
        deleted = await client.post(
            "/knowledge_base/delete_docs", json={"knowledge_base_name": kb, "file_names": ["faq.txt"]}
        )
        assert deleted.json()["data"]["failed_files"] == {}
        sources = f"/v1/knowledge_bases/{kb}/sources"
        created = await client.post(sources, json={"name": "notes", "kind": "directory", "path": "notes"})
        assert created.status_code == 201, created.text
        assert (await client.post(f"{sources}/notes/sync")).status_code == 202
        assert (await client.delete(f"{sources}/notes")).status_code == 204
        conversation = (await client.post("/v1/conversations", json={"title": "t"})).json()["id"]
        assert (await client.delete(f"/v1/conversations/{conversation}")).status_code == 204
        key = await client.post("/v1/keys", json={"name": "reader", "knowledge_bases": [kb]})
        assert key.status_code == 201
        reader = key.json()
        refused = await client.get("/v1/audit", headers=bearer(reader["key"]))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
        assert (await client.delete(f"/v1/keys/{reader['id']}")).status_code == 204
        assert (await client.delete(f"/v1/knowledge_bases/{kb}")).status_code == 204

        entries = await trail(client, since=started)

    assert [(e["action"], e["knowledge_base"], e["target"]) for e in reversed(entries)] == [
        ("kb.create", kb, None),
        ("file.upload", kb, "leave.md"),  # one entry per file of the upload, in its order
        ("file.upload", kb, "rota.md"),
        ("file.reindex", kb, "leave.md"),
        ("file.delete", kb, "leave.md"),
        ("file.upload", kb, "faq.txt"),
        ("file.reindex", kb, "faq.txt"),
        ("file.delete", kb, "faq.txt"),
        ("source.create", kb, "notes"),
        ("source.sync", kb, "notes"),
        ("source.delete", kb, "notes"),
        ("conversation.delete", None, conversation),
        ("key.create", None, reader["id"]),
        ("access.denied", None, None),
        ("key.revoke", None, reader["id"]),
        ("kb.delete", kb, None),
    ]
    by_action = {e["action"]: e for e in reversed(entries)}  # the newest of each
    # Who and from where: the forwarded address (uvicorn's peer, 127.0.0.1, is a trusted proxy
    # by default) and the user agent.
    for entry in entries:
        assert entry["client_ip"] == "198.51.100.23" and entry["user_agent"] == "audit-test/1.0"
        assert entry["request_id"] and entry["at"] >= started and entry["time"].endswith("Z")
    denied = by_action["access.denied"]
    assert denied["actor"] == {"type": "key", "id": reader["id"], "name": "reader"}
    assert denied["outcome"] == "denied" and denied["detail"] == {"method": "GET", "path": "/v1/audit"}
    assert all(e["actor"] == ROOT_ACTOR for e in entries if e is not denied)
    for action in ("file.upload", "file.reindex", "file.delete"):  # the newest: Chatchat's
        assert by_action[action]["detail"]["via"] == "chatchat"
    assert [e["detail"].get("job_id") for e in entries if e["target"] == "leave.md"][-1] == job_id
    rota = next(e for e in entries if e["target"] == "rota.md")
    assert rota["detail"] == {"bytes": 27, "job_id": rota_job_id, "override": False}
    assert by_action["key.create"]["detail"]["name"] == "reader"
    assert reader["key"] not in json.dumps(entries)  # the secret itself is never recorded

    # Each entry is also one JSON line on zhiku.audit, with the same facts.
    formatter = JsonFormatter("gateway")
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "zhiku.audit"]
    logged = [line["audit"] for line in lines if line["audit"]["knowledge_base"] == kb]
    assert [line["action"] for line in logged][:2] == ["kb.create", "file.upload"]
    assert logged[0]["actor"] == ROOT_ACTOR and logged[0]["client_ip"] == "198.51.100.23"
    assert all(line["audit"]["stored"] is True and line["logger"] == "zhiku.audit" for line in lines)


@pytest.mark.asyncio(loop_scope="module")
async def test_file_chat_uploads_are_audited(stack: tuple[Stack, Path]) -> None:
    running, _ = stack
    async with httpx.AsyncClient(base_url=running.url, timeout=120, headers=ROOT) as client:
        started = time.time()
        native = await client.post("/v1/file_chats", files=[("files", ("memo.txt", b"Pier 88 at dawn."))])
        assert native.status_code == 201, native.text
        chatchat = await client.post(
            "/knowledge_base/upload_temp_docs", files=[("files", ("note.txt", b"Lyon warehouse."))]
        )
        assert chatchat.json()["code"] == 200, chatchat.text
        uploads = await trail(client, action="file.upload", since=started)
    assert [(e["target"], e["detail"]["via"], e["detail"]["bytes"]) for e in uploads] == [
        ("note.txt", "chatchat", 15),
        ("memo.txt", "file_chat", 16),
    ]
    assert uploads[1]["detail"]["file_chat"] == native.json()["id"]
    assert uploads[0]["detail"]["file_chat"] == chatchat.json()["data"]["id"]
    assert all(e["knowledge_base"].startswith("tmp_") and e["actor"] == ROOT_ACTOR for e in uploads)


@pytest.mark.asyncio(loop_scope="module")
async def test_filters_and_pages_over_http(stack: tuple[Stack, Path]) -> None:
    running, _ = stack
    kbs = [f"flt-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    async with httpx.AsyncClient(base_url=running.url, timeout=60, headers=ROOT) as client:
        before = time.time()
        for kb in kbs:
            assert (await client.post("/v1/knowledge_bases", json={"name": kb})).status_code == 201
        key = (await client.post("/v1/keys", json={"name": "pager", "admin": True})).json()
        # The new admin key acts as itself.
        async with httpx.AsyncClient(base_url=running.url, timeout=60, headers=bearer(key["key"])) as pager:
            assert (await pager.delete(f"/v1/knowledge_bases/{kbs[0]}")).status_code == 204
        after = time.time()

        created = await trail(client, action="kb.create", since=before, limit=1)
        assert [e["knowledge_base"] for e in created] == list(reversed(kbs))
        first_page = (await client.get("/v1/audit", params={"action": "kb.create", "limit": 2})).json()
        assert len(first_page["data"]) == 2 and first_page["next_cursor"]

        by_kb = await trail(client, knowledge_base=kbs[0])
        assert [e["action"] for e in by_kb] == ["kb.delete", "kb.create"]
        for actor in (key["id"], "pager"):  # a key's id or its name
            assert [e["action"] for e in await trail(client, actor=actor, since=before)] == ["kb.delete"]
        # ISO 8601 works as well as unix seconds; the window excludes what came later.
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1)) + "Z"
        window = await trail(client, since=iso, until=after, knowledge_base=kbs[1])
        assert [e["action"] for e in window] == ["kb.create"]
        assert await trail(client, until=before - 3600, knowledge_base=kbs[1]) == []

        refusals: list[tuple[dict[str, str | float], str]] = [
            ({"since": "yesterday"}, "since"),
            ({"until": "nan"}, "until"),
            ({"since": after, "until": before}, "since"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"action": "kb.explode"}, "action"),
            ({"limit": 0}, "limit"),
        ]
        for params, param in refusals:
            reply = await client.get("/v1/audit", params=params)
            assert reply.status_code == 422, (params, reply.text)
            assert param in json.dumps(reply.json()["error"]), reply.text


def failures(action: str) -> float:
    return REGISTRY.get_sample_value("zhiku_audit_failures_total", {"action": action}) or 0.0


async def test_a_forwarded_address_from_an_untrusted_peer_is_ignored() -> None:
    app = create_app(gateway_settings({}, api_keys="root-key", trusted_proxies=""))
    async with asgi_client(app) as client:  # the in-process peer, 127.0.0.1, is no proxy here
        created = await client.post("/v1/keys", json={"name": "k"}, headers={**ROOT, **CLIENT})
        assert created.status_code == 201
        [entry] = await trail(client, ROOT)
        assert entry["action"] == "key.create" and entry["client_ip"] == "127.0.0.1"
        assert entry["user_agent"] == "audit-test/1.0"


async def test_admin_database_actions_and_an_open_gateways_anonymous_actor(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        connection.execute("CREATE TABLE stock (item TEXT)")
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    app = create_app(gateway_settings({}, agent_tools="text2sql"))  # no keys: open
    async with asgi_client(app) as client:
        assert (await client.put("/v1/agent/databases/shop", json={"url": url})).status_code == 201
        assert (await client.delete("/v1/agent/databases/shop")).status_code == 204
        entries = await trail(client)
    assert [(e["action"], e["target"]) for e in entries] == [
        ("agent_database.remove", "shop"),
        ("agent_database.register", "shop"),
    ]
    assert entries[1]["detail"] == {"url": url, "backend": "sqlite", "replaced": False}
    assert all(e["actor"] == {"type": "anonymous", "id": "anonymous", "name": "anonymous"} for e in entries)


async def test_a_failing_store_fails_no_request_but_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = gateway_settings({}, api_keys="root-key")
    async with asgi_client(create_app(settings)) as client:
        engine = create_engine(settings.catalog_url)
        with engine.begin() as connection:  # the trail's table goes away under the running gateway
            connection.execute(text("DROP TABLE gw_audit"))
        engine.dispose()
        before = failures("key.create")
        caplog.set_level(logging.INFO, logger="zhiku.audit")
        created = await client.post("/v1/keys", json={"name": "still-works"}, headers=ROOT)
        assert created.status_code == 201, created.text
        assert failures("key.create") == before + 1
        assert any(
            r.name == "zhiku.gateway.audit" and r.levelname == "ERROR" and "key.create" in r.getMessage()
            for r in caplog.records
        )
        # The JSON line still carries the entry, marked as not stored.
        [line] = [r for r in caplog.records if r.name == "zhiku.audit"]
        assert line.fields["audit"]["target"] == created.json()["id"]  # type: ignore[attr-defined]
        assert line.fields["audit"]["stored"] is False  # type: ignore[attr-defined]
        # Reading a trail that cannot be read is an error, not an empty list.
        assert (await client.get("/v1/audit", headers=ROOT)).status_code >= 500


async def test_entries_past_the_retention_are_pruned_by_a_later_write() -> None:
    settings = gateway_settings({}, api_keys="root-key", audit_retention_days=30)
    async with asgi_client(create_app(settings)) as client:
        old = time.time() - 31 * 86_400
        engine = create_engine(settings.catalog_url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO gw_audit (at, action, outcome, actor_type, actor_id, actor_name, detail) "
                    "VALUES (:at, 'kb.create', 'ok', 'gateway', 'gateway', 'gateway', '{}')"
                ),
                {"at": old},
            )
        engine.dispose()
        assert (await client.post("/v1/keys", json={"name": "k"}, headers=ROOT)).status_code == 201
        assert [e["action"] for e in await trail(client, ROOT)] == ["key.create"]
