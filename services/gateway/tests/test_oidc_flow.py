"""Single sign-on through a real OpenID provider (npm's oidc-provider, started per module):
the redirect, the callback, the user it creates or updates (groups and roles from the group
map, a session cookie), and every way a sign-in can fail, each with its precise status and
nothing written.

The gateway runs in-process (ASGI) at ``http://gateway``; the provider sends the "browser"
(``sign_in_at_provider``, filling its login and consent forms over HTTP) back there, and the
test hands that URL to the gateway, which then talks to the provider for real (discovery,
token, JWKS, userinfo). The browser test in tests/ui does the same through headless Chromium.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.config import OidcSettings, SsoGrant
from services.gateway.store import GatewayStore
from services.gateway.store.grants import Role
from testing.oidc_provider import RunningProvider, provider_client, running_provider, sign_in_at_provider

from .support import asgi_client, dead_address, gateway_settings

CALLBACK = "http://gateway/v1/auth/oidc/callback"
CLIENT_ID = "zhiku-gateway"
CLIENT_SECRET = "test-client-secret-0123456789"
PUBLIC_CLIENT_ID = "zhiku-public"
ADMIN_KEY = "test-admin-key"  # a configured key closes the gateway: sessions must be real
ACCOUNTS: dict[str, dict[str, Any]] = {
    "ana": {"email": "Ana@Example.com", "name": "Ana Lima", "groups": ["finance", "staff"]},
    "ops": {"email": "ops@example.com", "name": "Ops", "groups": ["rag-admins", "finance"]},
    "noemail": {"name": "Nobody", "groups": ["finance"]},
    "outsider": {"email": "eve@elsewhere.example", "groups": ["finance"]},
}
GROUP_MAP = {
    "finance": SsoGrant(group="finance", knowledge_bases={"reports": "viewer"}),
    "rag-admins": SsoGrant(admin=True),
}


@pytest.fixture(scope="module")
def provider() -> Iterator[RunningProvider]:
    clients = [
        provider_client(CLIENT_ID, CALLBACK, CLIENT_SECRET),
        provider_client(PUBLIC_CLIENT_ID, CALLBACK),  # no secret: PKCE alone proves the caller
    ]
    with running_provider(clients, ACCOUNTS) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_accounts(provider: RunningProvider) -> None:
    provider.set_accounts(ACCOUNTS)


def sso_settings(issuer: str, **overrides: Any) -> OidcSettings:
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["email", "profile", "groups"],
        "group_map": GROUP_MAP,
        **overrides,
    }
    return OidcSettings(**values)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    store: GatewayStore

    async def sign_in(self, login: str, next_path: str = "/") -> httpx.Response:
        """The whole flow in a fresh "browser" (no provider session): the callback's answer."""
        self.client.cookies.clear()
        authorize = await start(self.client, next_path)
        async with httpx.AsyncClient() as browser:
            callback = await sign_in_at_provider(browser, authorize, login)
        return await self.client.get(local(callback))

    async def users(self) -> int:
        return await self.store.run(self.store.users.count)


@asynccontextmanager
async def running_gateway(issuer: str, **oidc: Any) -> AsyncIterator[Gateway]:
    settings = gateway_settings({}, api_keys=[ADMIN_KEY], oidc=sso_settings(issuer, **oidc))
    app = create_app(settings)
    async with asgi_client(app) as client:
        yield Gateway(client, app.state.store)


@pytest.fixture
async def gw(provider: RunningProvider) -> AsyncIterator[Gateway]:
    async with running_gateway(provider.issuer) as running:
        yield running


@pytest.fixture
async def gateway(gw: Gateway) -> httpx.AsyncClient:
    return gw.client


def local(url: str) -> str:
    """The gateway-relative part of a URL the provider redirected to."""
    assert url.startswith("http://gateway/"), url
    return url.removeprefix("http://gateway")


async def start(gateway: httpx.AsyncClient, next_path: str = "/") -> str:
    started = await gateway.get("/v1/auth/oidc/login", params={"next": next_path})
    assert started.status_code == 302, started.text
    return started.headers["location"]


async def test_login_redirects_with_pkce_state_and_nonce(
    gateway: httpx.AsyncClient, provider: RunningProvider
) -> None:
    started = await gateway.get("/v1/auth/oidc/login")
    assert started.status_code == 302
    location = urlsplit(started.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == provider.issuer
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == CALLBACK
    assert query["response_type"] == "code"
    assert query["scope"].split() == ["openid", "email", "profile", "groups"]
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43  # base64url of a SHA-256
    assert query["state"] and query["nonce"]
    cookie = started.headers["set-cookie"]
    assert cookie.startswith("zhiku_oidc=")
    assert "path=/v1/auth/oidc" in cookie and "httponly" in cookie.lower() and "samesite=lax" in cookie


@pytest.mark.parametrize("bad_next", ["https://evil.example/", "//evil.example", "/\\evil.example"])
async def test_login_refuses_a_next_that_leaves_the_site(gateway: httpx.AsyncClient, bad_next: str) -> None:
    answer = await gateway.get("/v1/auth/oidc/login", params={"next": bad_next})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_next"
    assert "location" not in answer.headers and "set-cookie" not in answer.headers
    # A browser gets the same refusal as a page.
    page = await gateway.get(
        "/v1/auth/oidc/login", params={"next": bad_next}, headers={"Accept": "text/html"}
    )
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert "Sign-in failed" in page.text and "next must" in page.text


async def test_a_callback_from_another_browser_is_a_state_mismatch(
    gateway: httpx.AsyncClient, provider: RunningProvider
) -> None:
    """Login CSRF: a code obtained in one browser, delivered to another, is refused."""
    authorize = await start(gateway)
    async with httpx.AsyncClient() as browser:
        callback = await sign_in_at_provider(browser, authorize, "ana")
    assert "code=" in callback
    gateway.cookies.clear()  # the other browser has no flow cookie
    answer = await gateway.get(local(callback))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "state_mismatch"
    assert "zhiku_session" not in answer.headers.get("set-cookie", "")


async def test_a_forged_state_is_a_state_mismatch(gw: Gateway) -> None:
    await start(gw.client)  # a flow cookie exists, for another state
    answer = await gw.client.get("/v1/auth/oidc/callback", params={"code": "x", "state": "forged"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "state_mismatch"
    failed = await audit(gw, "auth.login_failed")
    assert [(entry["actor"]["type"], entry["detail"]["reason"]) for entry in failed] == [
        ("anonymous", "state_mismatch")
    ]


async def test_provider_errors_are_reported_as_the_provider_said(gateway: httpx.AsyncClient) -> None:
    authorize = await start(gateway)
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    denied = await gateway.get(
        "/v1/auth/oidc/callback",
        params={
            "error": "access_denied",
            "error_description": "End-User aborted interaction",
            "state": state,
        },
        headers={"Accept": "text/html"},
    )
    assert denied.status_code == 403
    assert "access_denied: End-User aborted interaction" in denied.text


async def test_sso_off_answers_404() -> None:
    async with asgi_client(create_app(gateway_settings({}))) as client:
        for path in ("/v1/auth/oidc/login", "/v1/auth/oidc/callback"):
            answer = await client.get(path)
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "sso_not_configured"


async def test_an_unreachable_provider_is_a_502() -> None:
    settings = gateway_settings({}, oidc=sso_settings(f"http://{dead_address()}"))
    async with asgi_client(create_app(settings)) as client:
        answer = await client.get("/v1/auth/oidc/login")
        assert answer.status_code == 502
        assert "could not be reached" in answer.json()["error"]["message"]


def session_cookie(answer: httpx.Response) -> str:
    cookies = [value for key, value in answer.headers.multi_items() if key == "set-cookie"]
    found = [cookie for cookie in cookies if cookie.startswith("zhiku_session=")]
    assert len(found) == 1, cookies
    return found[0]


async def test_first_sign_in_creates_the_user_with_mapped_groups_roles_and_a_session(gw: Gateway) -> None:
    assert await gw.users() == 0
    answer = await gw.sign_in("ana", next_path="/kb/reports?tab=files")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/kb/reports?tab=files"
    cookie = session_cookie(answer).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http here; https or the setting turns it on

    user = await gw.store.run(gw.store.users.find_by_email, "ana@example.com")
    assert user is not None
    assert (user.display_name, user.sso, user.has_password, user.admin) == ("Ana Lima", True, False, False)
    assert user.groups == ("finance",)  # "staff" is not in the group map
    assert await gw.store.run(gw.store.grants.roles_of, user.id, user.groups) == {"reports": Role.VIEWER}
    # The cookie is a session, as a password sign-in's: /v1/auth/me knows the person.
    me = (await gw.client.get("/v1/auth/me")).json()
    assert me["auth"] == "session" and me["csrf_token"]
    assert me["user"]["email"] == "ana@example.com" and me["user"]["sso"] is True
    assert me["user"]["groups"] == ["finance"]
    # Signed in, audited as such, with the new user.
    trail = await audit(gw, "auth.login")
    assert [(entry["actor"]["id"], entry["detail"]) for entry in trail] == [(user.id, {"method": "sso"})]
    assert [entry["target"] for entry in await audit(gw, "user.create")] == [user.id]

    # Signing out ends it: the same cookie, replayed, is refused afterwards.
    cookie = gw.client.cookies["zhiku_session"]
    out = await gw.client.post("/v1/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    assert out.status_code in (200, 204), out.text
    gw.client.cookies.set("zhiku_session", cookie)
    assert (await gw.client.get("/v1/conversations")).status_code == 401


async def audit(gw: Gateway, action: str) -> list[dict[str, Any]]:
    """The audit trail's entries for ``action``, through the API as an admin reads them."""
    answer = await gw.client.get(
        "/v1/audit", params={"action": action}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["data"]
    return entries


async def test_each_sign_in_updates_groups_and_admin_from_the_claims(
    gw: Gateway, provider: RunningProvider
) -> None:
    assert (await gw.sign_in("ops")).status_code == 303
    ops = await gw.store.run(gw.store.users.find_by_email, "ops@example.com")
    assert ops is not None and ops.admin and ops.groups == ("finance",)
    # An admin put them in a group by hand: SSO leaves groups the map does not name alone.
    await gw.store.run(gw.store.groups.create, "auditors")
    await gw.store.run(gw.store.groups.add_member, "auditors", ops.id)

    provider.set_accounts({**ACCOUNTS, "ops": {**ACCOUNTS["ops"], "groups": ["staff"]}})
    assert (await gw.sign_in("ops")).status_code == 303
    again = await gw.store.run(gw.store.users.find_by_email, "ops@example.com")
    assert again is not None and again.id == ops.id
    assert not again.admin  # left rag-admins at the provider
    assert again.groups == ("auditors",)  # left finance; the hand-made group stays
    assert await gw.users() == 1


async def test_a_user_an_admin_made_is_linked_by_email(gw: Gateway) -> None:
    made = await gw.store.run(gw.store.users.create, "ana@example.com", "Ana", "argon2-hash-stand-in")
    assert (await gw.sign_in("ana")).status_code == 303
    linked = await gw.store.run(gw.store.users.get, made.id)
    assert linked is not None and linked.sso and linked.has_password and linked.groups == ("finance",)
    assert await gw.users() == 1


async def test_a_disabled_user_is_refused_and_nothing_changes(gw: Gateway, provider: RunningProvider) -> None:
    assert (await gw.sign_in("ana")).status_code == 303
    ana = await gw.store.run(gw.store.users.find_by_email, "ana@example.com")
    assert ana is not None
    await gw.store.run(gw.store.users.update, ana.id, disabled=True)
    provider.set_accounts({**ACCOUNTS, "ana": {**ACCOUNTS["ana"], "name": "Renamed", "groups": []}})

    refused = await gw.sign_in("ana")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "user_disabled"
    assert "zhiku_session" not in refused.headers.get("set-cookie", "")
    after = await gw.store.run(gw.store.users.get, ana.id)
    assert after is not None and after.display_name == "Ana Lima" and after.groups == ("finance",)
    failed = await audit(gw, "auth.login_failed")
    assert [(entry["actor"]["name"], entry["outcome"], entry["detail"]) for entry in failed] == [
        ("ana@example.com", "denied", {"method": "sso", "reason": "user_disabled"})
    ]


async def test_missing_claims_are_a_422_and_create_no_one(gw: Gateway) -> None:
    answer = await gw.sign_in("noemail")
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "missing_claim"
    assert "no email address" in answer.json()["error"]["message"]
    assert await gw.users() == 0
    assert await gw.store.run(gw.store.groups.list) == []


async def test_sign_up_closed_and_email_domains_refuse_without_writing(provider: RunningProvider) -> None:
    async with running_gateway(provider.issuer, auto_create_users=False) as gw:
        closed = await gw.sign_in("ana")
        assert closed.status_code == 403
        assert closed.json()["error"]["code"] == "sign_up_closed"
        assert await gw.users() == 0
    async with running_gateway(provider.issuer, email_domains=["example.com"]) as gw:
        outside = await gw.sign_in("outsider")
        assert outside.status_code == 403
        assert outside.json()["error"]["code"] == "email_domain_refused"
        assert (await gw.sign_in("ana")).status_code == 303
        assert await gw.users() == 1


async def test_a_callback_cannot_be_replayed(gw: Gateway) -> None:
    authorize = await start(gw.client)
    async with httpx.AsyncClient() as browser:
        callback = await sign_in_at_provider(browser, authorize, "ana")
    assert (await gw.client.get(local(callback))).status_code == 303
    gw.client.cookies.delete("zhiku_session")
    replayed = await gw.client.get(local(callback))
    assert replayed.status_code == 400
    assert replayed.json()["error"]["code"] == "state_mismatch"


async def test_a_public_client_signs_in_with_pkce_alone(provider: RunningProvider) -> None:
    async with running_gateway(
        provider.issuer, client_id=PUBLIC_CLIENT_ID, client_secret="", state_secret="shared-by-replicas"
    ) as gw:
        answer = await gw.sign_in("ana")
        assert answer.status_code == 303, answer.text
        assert session_cookie(answer)
        assert await gw.users() == 1
