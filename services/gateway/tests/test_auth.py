"""People signing in: the first admin from configuration, sessions (cookie, CSRF, expiry, sign
out), disabled users, keys that belong to users and never exceed them, roles from grants and
groups narrowing a key, limits per user, the users and groups admin API, and upgrading a
keys-only gateway. The services' addresses are dead: every answer here is the gateway's own
(a request that passes all checks reaches a dead service and gets 503)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from services.gateway.app import create_app
from services.gateway.store.grants import HolderKind, Role
from services.gateway.store.keys import hash_key

from .support import asgi_client, gateway_settings
from .test_identity_store import KEYS_ONLY_TABLE

ADMIN_EMAIL = "Root@Example.com"
ADMIN_PASSWORD = "root-password-1"
ANA = ("ana@example.com", "ana-password-1")
BO = ("bo@example.com", "bo-password-1")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> str:
    """Sign in on ``client`` (its cookie jar keeps the session); the CSRF token."""
    reply = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return reply.json()["csrf_token"]


def second_client(app: FastAPI) -> httpx.AsyncClient:
    """Another browser on the same app (its own cookie jar); the lifespan already runs."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.fixture
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    overrides: dict[str, Any] = {"session_cookie_secure": False, **getattr(request, "param", {})}
    settings = gateway_settings({}, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, **overrides)
    app = create_app(settings)
    async with asgi_client(app) as client:
        yield app, client


async def make_user(client: httpx.AsyncClient, csrf: str, email: str, password: str, **fields: Any) -> dict:
    reply = await client.post(
        "/v1/users", json={"email": email, "password": password, **fields}, headers={"X-CSRF-Token": csrf}
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


async def test_the_first_admin_closes_the_gateway_and_signs_in(gateway) -> None:
    app, client = gateway
    assert (await client.get("/v1/conversations")).status_code == 401  # a user exists: closed
    assert (await client.get("/v1/auth/config")).json() == {"password": True, "sso": False, "sso_label": ""}
    assert (await client.get("/healthz")).status_code == 200

    wrong = await client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": "nope"})
    unknown = await client.post("/v1/auth/login", json={"email": "who@example.com", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # nothing tells which emails exist

    reply = await client.post(
        "/v1/auth/login", json={"email": ADMIN_EMAIL.upper(), "password": ADMIN_PASSWORD}
    )
    assert reply.status_code == 200, reply.text
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith("zhiku_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # ZHIKU_GATEWAY_SESSION_COOKIE_SECURE=false here
    user = reply.json()["user"]
    assert user["email"] == "root@example.com" and user["admin"] and user["groups"] == []
    assert set(user) == {"id", "email", "display_name", "admin", "groups", "disabled", "sso", "created_at"}
    me = (await client.get("/v1/auth/me")).json()
    assert me == {"user": user, "csrf_token": reply.json()["csrf_token"], "auth": "session"}
    # The cookie's token is stored only as its hash.
    token = client.cookies["zhiku_session"]
    engine = create_engine(app.state.settings.catalog_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT token_hash FROM gw_sessions")).scalars().all()
    engine.dispose()
    assert rows == [hash_key(token)]

    assert (await client.post("/v1/auth/logout")).status_code == 403  # CSRF applies to sign-out too
    out = await client.post("/v1/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    assert out.status_code == 204 and "zhiku_session=" in out.headers["set-cookie"]
    assert (await client.get("/v1/auth/me")).status_code == 401
    client.cookies.set("zhiku_session", token)  # replaying the old cookie: the session is gone
    replay = await client.get("/v1/auth/me")
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "session_expired"


@pytest.mark.parametrize("gateway", [{"session_cookie_secure": True}], indirect=True)
async def test_the_cookie_is_secure_when_configured(gateway) -> None:
    _, client = gateway
    reply = await client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert "Secure" in reply.headers["set-cookie"]


async def test_cookie_writes_need_the_csrf_token_and_keys_need_none(gateway) -> None:
    app, client = gateway
    csrf = await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    body = {"email": ANA[0], "password": ANA[1]}
    forged = await client.post("/v1/users", json=body)
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    wrong = await client.post("/v1/users", json=body, headers={"X-CSRF-Token": csrf + "x"})
    assert wrong.status_code == 403
    assert (await client.get("/v1/users")).status_code == 200  # reads need no token
    assert (await client.post("/v1/users", json=body, headers={"X-CSRF-Token": csrf})).status_code == 201
    key = (
        await client.post("/v1/keys", json={"name": "ops", "admin": True}, headers={"X-CSRF-Token": csrf})
    ).json()
    async with second_client(app) as program:
        made = await program.post("/v1/groups", json={"name": "ops"}, headers=bearer(key["key"]))
        assert made.status_code == 201, made.text


@pytest.mark.parametrize("gateway", [{"session_ttl_s": 1.5}], indirect=True)
async def test_sessions_expire(gateway) -> None:
    app, client = gateway
    await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert (await client.get("/v1/auth/me")).status_code == 200
    token = client.cookies["zhiku_session"]
    await asyncio.sleep(1.7)
    # Whether or not the browser still sends the cookie (its Max-Age is rounded up), the
    # session is over on the server.
    client.cookies.clear()
    client.cookies.set("zhiku_session", token)
    expired = await client.get("/v1/auth/me")
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "session_expired"
    # The next sign-in deletes the expired session's row.
    await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    store = app.state.store
    assert await store.run(store.sessions.find, token) is None
    engine = create_engine(app.state.settings.catalog_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM gw_sessions")).scalar() == 1
    engine.dispose()


async def test_a_disabled_user_loses_access_at_once(gateway) -> None:
    app, admin = gateway
    csrf = await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    ana = await make_user(admin, csrf, *ANA)
    async with second_client(app) as browser:
        ana_csrf = await sign_in(browser, *ANA)
        key = (
            await browser.post("/v1/keys", json={"name": "mine"}, headers={"X-CSRF-Token": ana_csrf})
        ).json()
        assert key["owner"] == ana["id"] and not key["admin"]
        assert (await browser.get("/v1/conversations")).status_code == 200
        assert (await browser.get("/v1/conversations", headers=bearer(key["key"]))).status_code == 200

        disabled = await admin.patch(
            f"/v1/users/{ana['id']}", json={"disabled": True}, headers={"X-CSRF-Token": csrf}
        )
        assert disabled.status_code == 200 and disabled.json()["disabled"]
        assert (await browser.get("/v1/conversations")).status_code == 401
        assert (await browser.get("/v1/conversations", headers=bearer(key["key"]))).status_code == 401
        refused = await browser.post("/v1/auth/login", json={"email": ANA[0], "password": ANA[1]})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_disabled"

        await admin.patch(f"/v1/users/{ana['id']}", json={"disabled": False}, headers={"X-CSRF-Token": csrf})
        assert (await browser.get("/v1/conversations", headers=bearer(key["key"]))).status_code == 200
        # Deleting the user revokes their keys.
        assert (
            await admin.delete(f"/v1/users/{ana['id']}", headers={"X-CSRF-Token": csrf})
        ).status_code == 204
        assert (await browser.get("/v1/conversations", headers=bearer(key["key"]))).status_code == 401


async def test_a_key_never_exceeds_its_owner(gateway) -> None:
    app, admin = gateway
    csrf = await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    ana = await make_user(admin, csrf, *ANA)
    boss = await make_user(admin, csrf, *BO, admin=True)
    async with second_client(app) as browser:
        ana_csrf = await sign_in(browser, *ANA)
        minted = await browser.post(
            "/v1/keys", json={"name": "x", "admin": True}, headers={"X-CSRF-Token": ana_csrf}
        )
        assert minted.status_code == 403 and minted.json()["error"]["code"] == "admin_required"
        assert (await browser.get("/v1/users")).status_code == 403

    # An admin's admin key is admin only while its owner is.
    async with second_client(app) as browser:
        bo_csrf = await sign_in(browser, *BO)
        key = (
            await browser.post(
                "/v1/keys", json={"name": "ops", "admin": True}, headers={"X-CSRF-Token": bo_csrf}
            )
        ).json()
        assert key["admin"] and key["owner"] == boss["id"]
        assert (await browser.get("/v1/users", headers=bearer(key["key"]))).status_code == 200
        await admin.patch(f"/v1/users/{boss['id']}", json={"admin": False}, headers={"X-CSRF-Token": csrf})
        assert (await browser.get("/v1/users", headers=bearer(key["key"]))).status_code == 403
        assert (await browser.get("/v1/users")).status_code == 403  # the session too

    # Roles: Ana views "handbook" through her group and edits nothing; her key limited to
    # "handbook" and "wiki" still reaches only what she may (the intersection).
    store, guard = app.state.store, app.state.guard
    await store.run(store.groups.create, "support")
    await store.run(store.groups.add_member, "support", ana["id"])
    await store.run(store.grants.set, "handbook", HolderKind.GROUP, "support", Role.VIEWER)
    await store.run(store.grants.set, "notes", HolderKind.USER, ana["id"], Role.OWNER)
    guard.forget_roles()
    app.state.access.forget_cached()
    async with second_client(app) as browser:
        ana_csrf = await sign_in(browser, *ANA)
        scoped = (
            await browser.post(
                "/v1/keys",
                json={"name": "bot", "knowledge_bases": ["handbook", "wiki"]},
                headers={"X-CSRF-Token": ana_csrf},
            )
        ).json()
        for caller in ({"X-CSRF-Token": ana_csrf}, bearer(scoped["key"])):
            # Viewing "handbook" passes every check and reaches the (dead) ingest service.
            assert (
                await browser.get("/v1/knowledge_bases/handbook/files", headers=caller)
            ).status_code == 503
            # Editing it: she knows it exists, her role falls short.
            upload = await browser.post(
                "/v1/knowledge_bases/handbook/files", files={"files": ("a.txt", b"a")}, headers=caller
            )
            assert upload.status_code == 403 and "editor role" in upload.json()["error"]["message"]
            # No role on "wiki" (even though the key lists it): as if it did not exist.
            hidden = await browser.get("/v1/knowledge_bases/wiki/files", headers=caller)
            assert hidden.status_code == 404
            assert hidden.json()["error"]["message"] == "knowledge base 'wiki' does not exist"
        # Her own "notes": the session may delete it, the key (not listing it) may not see it.
        assert (
            await browser.delete("/v1/knowledge_bases/notes", headers={"X-CSRF-Token": ana_csrf})
        ).status_code == 503
        assert (
            await browser.get("/v1/knowledge_bases/notes", headers=bearer(scoped["key"]))
        ).status_code == 404
        # A key made through the scoped key stays within its list.
        wider = await browser.post(
            "/v1/keys", json={"name": "w", "knowledge_bases": ["notes"]}, headers=bearer(scoped["key"])
        )
        assert wider.status_code == 403
        narrower = await browser.post("/v1/keys", json={"name": "n"}, headers=bearer(scoped["key"]))
        assert narrower.status_code == 201 and narrower.json()["knowledge_bases"] == ["handbook", "wiki"]
        # She sees and revokes her own keys only.
        own = (await browser.get("/v1/keys")).json()["data"]
        assert {k["owner"] for k in own} == {ana["id"]} and len(own) == 2
        admins_keys = (await admin.get("/v1/keys")).json()["data"]
        others = [k["id"] for k in admins_keys if k["owner"] != ana["id"]]
        assert others
        assert (
            await browser.delete(f"/v1/keys/{others[0]}", headers={"X-CSRF-Token": ana_csrf})
        ).status_code == 404


@pytest.mark.parametrize("gateway", [{"user_rate_limit_per_minute": 3, "uploads_per_day": 1}], indirect=True)
async def test_limits_per_user_cover_sessions_and_keys_together(gateway) -> None:
    app, admin = gateway
    csrf = await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    await make_user(admin, csrf, *ANA)
    async with second_client(app) as browser:
        ana_csrf = await sign_in(browser, *ANA)
        key = (await browser.post("/v1/keys", json={"name": "k"}, headers={"X-CSRF-Token": ana_csrf})).json()[
            "key"
        ]
        assert (await browser.get("/v1/conversations")).status_code == 200  # 2 (the key was 1)
        assert (await browser.get("/v1/conversations", headers=bearer(key))).status_code == 200  # 3
        limited = await browser.get("/v1/conversations", headers=bearer(key))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "per-user rate limit of 3" in limited.json()["error"]["message"]
        assert (await browser.get("/v1/conversations")).status_code == 429  # the session shares it
    # Uploads per day: the admin's first upload passes the checks (the dead ingest answers),
    # the second is refused before it reaches anything.
    first = await admin.post(
        "/v1/file_chats", files={"files": ("a.txt", b"a")}, headers={"X-CSRF-Token": csrf}
    )
    assert first.status_code != 429
    second = await admin.post(
        "/v1/file_chats", files={"files": ("a.txt", b"a")}, headers={"X-CSRF-Token": csrf}
    )
    assert second.status_code == 429 and "uploads per day" in second.json()["error"]["message"]
    assert int(second.headers["Retry-After"]) > 3600


async def test_sign_in_attempts_are_limited_per_email(gateway) -> None:
    _, client = gateway
    for _ in range(10):
        await client.post("/v1/auth/login", json={"email": ANA[0], "password": "wrong"})
    limited = await client.post("/v1/auth/login", json={"email": ANA[0], "password": "wrong"})
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert (
        await client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    ).status_code == 200


async def test_users_and_groups_admin(gateway) -> None:
    app, admin = gateway
    csrf = {"X-CSRF-Token": await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)}
    weak = await admin.post("/v1/users", json={"email": ANA[0], "password": "short"}, headers=csrf)
    assert weak.status_code == 422 and "at least 8" in weak.json()["error"]["message"]
    bad = await admin.post("/v1/users", json={"email": "not-an-email"}, headers=csrf)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "email"
    ana = await make_user(admin, csrf["X-CSRF-Token"], *ANA, display_name="Ana")
    taken = await admin.post("/v1/users", json={"email": ANA[0].upper()}, headers=csrf)
    assert taken.status_code == 409
    sso_only = await admin.post("/v1/users", json={"email": "sso@example.com"}, headers=csrf)
    assert sso_only.status_code == 201
    assert (
        await admin.post("/v1/auth/login", json={"email": "sso@example.com", "password": "anything1"})
    ).status_code == 401

    assert (await admin.post("/v1/groups", json={"name": "Bad Name"}, headers=csrf)).status_code == 422
    group = await admin.post("/v1/groups", json={"name": "support", "display_name": "Support"}, headers=csrf)
    assert group.status_code == 201 and group.json() == {
        "name": "support",
        "display_name": "Support",
        "created_at": group.json()["created_at"],
        "members": [],
    }
    assert (await admin.post("/v1/groups", json={"name": "support"}, headers=csrf)).status_code == 409
    joined = await admin.put(f"/v1/groups/support/members/{ana['id']}", headers=csrf)
    assert joined.status_code == 200 and joined.json()["members"] == [ana["id"]]
    assert (await admin.put("/v1/groups/support/members/u_nobody", headers=csrf)).status_code == 404
    assert (await admin.get(f"/v1/users/{ana['id']}")).json()["groups"] == ["support"]

    async with second_client(app) as browser:
        ana_csrf = await sign_in(browser, *ANA)
        assert (await browser.get("/v1/auth/me")).json()["user"]["groups"] == ["support"]
        listed = (await browser.get("/v1/groups")).json()["data"]
        assert listed[0]["name"] == "support" and listed[0]["members"] is None  # not an admin
        refused = await browser.post("/v1/groups", json={"name": "mine"}, headers={"X-CSRF-Token": ana_csrf})
        assert refused.status_code == 403

    renamed = await admin.patch(
        f"/v1/users/{ana['id']}", json={"display_name": "Ana L.", "password": "new-password-2"}, headers=csrf
    )
    assert renamed.status_code == 200 and renamed.json()["display_name"] == "Ana L."
    async with second_client(app) as browser:
        await sign_in(browser, ANA[0], "new-password-2")

    me = (await admin.get("/v1/auth/me")).json()["user"]
    last = await admin.patch(f"/v1/users/{me['id']}", json={"admin": False}, headers=csrf)
    assert last.status_code == 409 and "last admin" in last.json()["error"]["message"]
    assert (await admin.delete(f"/v1/users/{me['id']}", headers=csrf)).status_code == 409
    assert (await admin.delete(f"/v1/groups/support/members/{ana['id']}", headers=csrf)).status_code == 204
    assert (await admin.delete(f"/v1/groups/support/members/{ana['id']}", headers=csrf)).status_code == 404
    assert (await admin.delete("/v1/groups/support", headers=csrf)).status_code == 204
    assert (await admin.get("/v1/users/u_missing")).status_code == 404

    actions = [entry["action"] for entry in (await admin.get("/v1/audit?limit=100")).json()["data"]]
    for action in (
        "auth.login",
        "user.create",
        "user.update",
        "group.create",
        "group.member_add",
        "group.member_remove",
        "group.delete",
        "access.denied",
    ):
        assert action in actions, actions


async def test_open_while_nothing_could_sign_in() -> None:
    app = create_app(gateway_settings({}))
    async with asgi_client(app) as client:
        assert (await client.get("/v1/auth/me")).json() == {"user": None, "csrf_token": "", "auth": "open"}
        assert (await client.post("/v1/users", json={"email": ANA[0], "password": ANA[1]})).status_code == 201
        assert (await client.get("/v1/auth/me")).status_code == 401  # the first user closes it
        await sign_in(client, *ANA)
        assert (await client.get("/v1/auth/me")).json()["auth"] == "session"


async def test_upgrading_a_keys_only_gateway(tmp_path: Path) -> None:
    """A deployment from before users: its admin key keeps working (it belongs to nobody and
    sees every conversation), and the configured admin signs in next to it."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(KEYS_ONLY_TABLE))
        connection.execute(
            text("INSERT INTO gw_api_keys VALUES ('old', 'ops', 'zk-old', :hash, NULL, NULL, 1, 0, NULL)"),
            {"hash": hash_key("zk-old-key")},
        )
    engine.dispose()
    settings = gateway_settings({}, catalog_url=url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)
    async with asgi_client(create_app(settings)) as client:
        me = (await client.get("/v1/auth/me", headers=bearer("zk-old-key"))).json()
        assert me == {"user": None, "csrf_token": "", "auth": "key"}
        assert (await client.get("/v1/users", headers=bearer("zk-old-key"))).status_code == 200
        await sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        keys = (await client.get("/v1/keys")).json()["data"]
        assert [(k["id"], k["owner"]) for k in keys] == [("old", None)]
