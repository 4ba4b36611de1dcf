"""API keys stored hashed, per-key knowledge bases, per-key rate limits, CORS and the start
log line. The services are not needed (their addresses are dead): every refusal here happens
in the gateway before any gRPC call, and the key routes only touch the gateway's store."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import create_engine, text

from services.gateway.access import Access
from services.gateway.app import create_app
from services.gateway.rate_limit import MemoryRateLimiter
from services.gateway.store import GatewayStore

from .support import asgi_client, gateway_settings

LIMITED_KB = "handbook"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_open_gateway_says_so_and_first_key_closes_it(caplog: pytest.LogCaptureFixture) -> None:
    settings = gateway_settings({})
    with caplog.at_level(logging.WARNING, logger="zhiku.gateway"):
        async with asgi_client(create_app(settings)) as client:
            assert any("gateway is open" in record.getMessage() for record in caplog.records)
            assert (await client.get("/v1/conversations")).status_code == 200  # open: no key needed

            created = await client.post("/v1/keys", json={"name": "ops", "admin": True})
            assert created.status_code == 201, created.text
            body = created.json()
            assert set(body) == {
                "id",
                "name",
                "key",
                "prefix",
                "knowledge_bases",
                "rate_limit_per_minute",
                "admin",
                "created_at",
                "owner",
            }
            assert body["key"].startswith(body["prefix"])

            # Closed from now on.
            assert (await client.get("/v1/conversations")).status_code == 401
            assert (await client.get("/v1/conversations", headers=bearer(body["key"]))).status_code == 200
            assert (await client.get("/healthz")).status_code == 200  # probes stay open
            assert (await client.get("/openapi.json")).status_code == 200  # so do the docs

            listed = (await client.get("/v1/keys", headers=bearer(body["key"]))).json()["data"]
            assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]

    # Stored hashed: the plaintext appears nowhere in the database.
    engine = create_engine(settings.catalog_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM gw_api_keys")).all()
    engine.dispose()
    assert rows and all(body["key"] not in " ".join(map(str, row)) for row in rows)


@pytest.fixture
async def locked():
    async with asgi_client(create_app(gateway_settings({}, api_keys="root-key"))) as client:
        yield client


async def test_keys_need_admin_and_limit_knowledge_bases(locked) -> None:
    client = locked
    assert (await client.get("/v1/keys")).status_code == 401
    assert (await client.get("/v1/keys", headers=bearer("wrong"))).status_code == 401
    created = await client.post(
        "/v1/keys", json={"name": "bot", "knowledge_bases": [LIMITED_KB]}, headers=bearer("root-key")
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert created.json()["knowledge_bases"] == [LIMITED_KB] and created.json()["admin"] is False

    # Not an admin key: no key management.
    refused = await client.get("/v1/keys", headers=bearer(key))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"

    # Another knowledge base reads as missing wherever it is named: the path, the query
    # (Chatchat style) and bodies. The refusal happens in the gateway (the services' addresses
    # are dead here), with the ingest service's own wording for an unknown name.
    missing = "knowledge base 'other' does not exist"
    for method, path, payload in [
        ("POST", "/v1/knowledge_bases/other/search", {"query": "q"}),
        ("POST", f"/v1/knowledge_bases/{LIMITED_KB}/search", {"query": "q", "knowledge_bases": ["other"]}),
        ("GET", "/v1/knowledge_bases/other/files", None),
        ("DELETE", "/v1/knowledge_bases/other", None),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "q"}], "knowledge_base": "other"},
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "q"}], "model": "kb:other"},
        ),
        ("POST", "/v1/conversations", {"knowledge_base": "other"}),
    ]:
        reply = await client.request(method, path, json=payload, headers=bearer(key))
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["error"]["message"] == missing
    # Creating a name outside the key's list is refused as such (existing or not).
    created_other = await client.post("/v1/knowledge_bases", json={"name": "other"}, headers=bearer(key))
    assert created_other.status_code == 403 and created_other.json()["error"]["type"] == "permission_error"
    # Chatchat routes name it in the body (JSON, form or a bare JSON string) or the query, and
    # answer in Chatchat's envelope exactly as for a knowledge base that does not exist.
    chatchat = [
        ("/chat/knowledge_base_chat", {"json": {"query": "q", "knowledge_base_name": "other"}}),
        ("/knowledge_base/delete_knowledge_base", {"json": "other"}),
        (
            "/knowledge_base/upload_docs",
            {"data": {"knowledge_base_name": "other"}, "files": {"files": ("a.txt", b"x")}},
        ),
    ]
    for path, payload in chatchat:
        reply = await client.post(path, headers=bearer(key), **payload)  # type: ignore[arg-type]
        assert reply.status_code == 200 and reply.json()["code"] == 404, (path, reply.text)
    listed = await client.get("/knowledge_base/list_files?knowledge_base_name=other", headers=bearer(key))
    assert listed.json()["code"] == 404
    searched = await client.post(
        "/knowledge_base/search_docs",
        json={"query": "q", "knowledge_base_name": "other"},
        headers=bearer(key),
    )
    assert searched.status_code == 200 and searched.json() == []
    refused = await client.post(
        "/knowledge_base/create_knowledge_base", json={"knowledge_base_name": "other"}, headers=bearer(key)
    )
    assert refused.status_code == 403 and set(refused.json()) == {"code", "msg", "data"}
    # Its own knowledge base passes the gate (and then fails on the dead ingest address: 503).
    allowed = await client.get(f"/v1/knowledge_bases/{LIMITED_KB}/files", headers=bearer(key))
    assert allowed.status_code == 503

    key_id = created.json()["id"]
    assert (await client.delete(f"/v1/keys/{key_id}", headers=bearer("root-key"))).status_code == 204
    assert (await client.get("/v1/conversations", headers=bearer(key))).status_code == 401
    assert (await client.delete(f"/v1/keys/{key_id}", headers=bearer("root-key"))).status_code == 404


async def test_rate_limit_answers_429_with_retry_after(locked) -> None:
    client = locked
    created = await client.post(
        "/v1/keys", json={"name": "slow", "rate_limit_per_minute": 3}, headers=bearer("root-key")
    )
    key = created.json()["key"]
    statuses = [(await client.get("/v1/conversations", headers=bearer(key))).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await client.get("/v1/conversations", headers=bearer(key))
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Other keys have their own budget.
    assert (await client.get("/v1/conversations", headers=bearer("root-key"))).status_code == 200


def test_rate_limiter_window_slides() -> None:
    limiter = MemoryRateLimiter()
    assert [limiter.retry_after_at("k", 2, now=t) for t in (0.0, 10.0)] == [None, None]
    assert limiter.retry_after_at("k", 2, now=30.0) == 30  # the first hit leaves the window at 60
    assert limiter.retry_after_at("k", 2, now=60.5) is None


async def test_cors_preflight_and_request_id() -> None:
    settings = gateway_settings({}, api_keys="root-key", cors_origins="https://app.example")
    async with asgi_client(create_app(settings)) as client:
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200  # answered without a key
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        reply = await client.get("/v1/conversations", headers={"Origin": "https://app.example"})
        assert reply.status_code == 401
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        assert reply.headers["x-request-id"]
        other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_conversations_belong_to_their_key(locked) -> None:
    client = locked
    keys = []
    for name in ("alice", "bob"):
        created = await client.post("/v1/keys", json={"name": name}, headers=bearer("root-key"))
        keys.append(created.json()["key"])
    alice, bob = keys
    mine = (await client.post("/v1/conversations", json={"title": "alice's"}, headers=bearer(alice))).json()
    assert (await client.get(f"/v1/conversations/{mine['id']}", headers=bearer(alice))).status_code == 200
    assert (await client.get("/v1/conversations", headers=bearer(bob))).json()["data"] == []
    for method in ("GET", "DELETE"):
        reply = await client.request(method, f"/v1/conversations/{mine['id']}", headers=bearer(bob))
        assert reply.status_code == 404  # someone else's reads as missing
    renamed = await client.patch(f"/v1/conversations/{mine['id']}", json={"title": "x"}, headers=bearer(bob))
    assert renamed.status_code == 404
    chat = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "conversation_id": mine["id"]},
        headers=bearer(bob),
    )
    assert chat.status_code == 404
    # Admin keys see every conversation.
    listed = (await client.get("/v1/conversations", headers=bearer("root-key"))).json()["data"]
    assert [c["id"] for c in listed] == [mine["id"]]


async def test_a_burst_shares_one_store_lookup_and_forgetting_refetches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests arriving together after the cache expired wait for one store query, not one
    each (64 thread hops and queries in front of every answer)."""
    settings = gateway_settings({})
    store = GatewayStore(settings.catalog_url)
    store.create_schema()
    access = Access(settings)
    access.store = store
    calls: list[str] = []
    for name in ("count_active", "find"):
        real = getattr(store.keys, name)

        def counted(*args: object, _real=real, _name=name) -> object:
            calls.append(_name)
            time.sleep(0.01)  # a query long enough for the others to arrive meanwhile
            return _real(*args)

        monkeypatch.setattr(store.keys, name, counted)
    try:
        assert all(await asyncio.gather(*(access.is_open() for _ in range(64))))
        assert calls == ["count_active"]

        _, plaintext = store.keys.create("ops")
        assert await access.is_open()  # cached answer, as other replicas see it for CACHE_TTL_S
        access.forget_cached()  # what this replica does after creating or revoking a key
        assert not await access.is_open()
        principals = await asyncio.gather(*(access.principal(plaintext) for _ in range(32)))
        assert {p.name for p in principals if p} == {"ops"} and len(principals) == 32
        unknown = await asyncio.gather(*(access.principal("zk-unknown") for _ in range(8)))
        assert unknown == [None] * 8
        assert calls == ["count_active", "count_active", "find", "find"]
    finally:
        store.dispose()
