"""Single sign-on through a real OpenID provider (npm's oidc-provider, started per module):
the redirect, the callback, and every way a sign-in can fail, each with its precise status.

The gateway runs in-process (ASGI) at ``http://gateway``; the provider sends the "browser"
(``sign_in_at_provider``, filling its login and consent forms over HTTP) back there, and the
test hands that URL to the gateway, which then talks to the provider for real (discovery,
token, JWKS, userinfo). The browser test in tests/ui does the same through headless Chromium.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.config import OidcSettings, SsoGrant
from testing.oidc_provider import RunningProvider, provider_client, running_provider, sign_in_at_provider

from .support import asgi_client, dead_address, gateway_settings

CALLBACK = "http://gateway/v1/auth/oidc/callback"
CLIENT_ID = "zhiku-gateway"
CLIENT_SECRET = "test-client-secret-0123456789"
ACCOUNTS = {
    "ana": {"email": "Ana@Example.com", "name": "Ana Lima", "groups": ["finance", "staff"]},
    "noemail": {"name": "Nobody"},
}


@pytest.fixture(scope="module")
def provider() -> Iterator[RunningProvider]:
    with running_provider([provider_client(CLIENT_ID, CALLBACK, CLIENT_SECRET)], ACCOUNTS) as running:
        yield running


def sso_settings(issuer: str, **overrides: Any) -> OidcSettings:
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["email", "profile", "groups"],
        "group_map": {"finance": SsoGrant(group="finance")},
        **overrides,
    }
    return OidcSettings(**values)


@pytest.fixture
async def gateway(provider: RunningProvider) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_settings({}, oidc=sso_settings(provider.issuer)))
    async with asgi_client(app) as client:
        yield client


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


async def test_a_forged_state_is_a_state_mismatch(gateway: httpx.AsyncClient) -> None:
    await start(gateway)  # a flow cookie exists, for another state
    answer = await gateway.get("/v1/auth/oidc/callback", params={"code": "x", "state": "forged"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "state_mismatch"


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
