"""Single sign-on in headless Chromium, the whole way: the web UI's "Sign in with" button, the
provider's login and consent pages (npm's oidc-provider, a certified OpenID provider, on
loopback), back to the UI signed in; the provider's group claim maps to a Zhiku group that
holds a viewer role on one knowledge base, so the person can search that one and not another;
then signing out ends the session.

The provider's redirect URI names the gateway's port, and the gateway names the provider's
issuer: the provider's port is chosen first, the stack starts with it, and the provider comes
up on it once the stack's address is known (discovery happens only at the first sign-in).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from launcher.stack import BackgroundStack, free_port
from testing.oidc_provider import RunningProvider, provider_client, running_provider

from .conftest import gateway_client, ingest, launch_ui_stack

CLIENT_ID = "zhiku-web"
CLIENT_SECRET = "browser-test-client-secret"
LABEL = "Acme ID"
ACCOUNTS = {"mei": {"email": "mei@acme.example", "name": "Mei Chen", "groups": ["acme-finance", "acme-all"]}}
GROUP_MAP = {"acme-finance": {"group": "finance", "knowledge_bases": {"finance-docs": "viewer"}}}
FINANCE = {
    "travel.txt": "Travel policy: economy class for flights under six hours; the budget code is FX-2207."
}
HR = {"leave.txt": "Leave policy: twenty days of annual leave; the form is HR-LEAVE-9."}


@pytest.fixture(scope="module")
def sso_stack(
    tmp_path_factory: pytest.TempPathFactory, output_dir: Path
) -> Iterator[tuple[BackgroundStack, RunningProvider]]:
    provider_port = free_port()
    env = {
        "ZHIKU_GATEWAY_OIDC_ISSUER": f"http://127.0.0.1:{provider_port}",
        "ZHIKU_GATEWAY_OIDC_CLIENT_ID": CLIENT_ID,
        "ZHIKU_GATEWAY_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "ZHIKU_GATEWAY_OIDC_SCOPES": "openid,email,profile,groups",
        "ZHIKU_GATEWAY_OIDC_LABEL": LABEL,
        "ZHIKU_GATEWAY_OIDC_GROUP_MAP": json.dumps(GROUP_MAP),
    }
    stack = launch_ui_stack(tmp_path_factory.mktemp("zhiku-sso"), output_dir / "sso-stack.log", env)
    try:
        client = provider_client(CLIENT_ID, f"{stack.url}/v1/auth/oidc/callback", CLIENT_SECRET)
        with running_provider([client], ACCOUNTS, port=provider_port) as provider:
            yield stack, provider
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def admin_api(sso_stack: tuple[BackgroundStack, RunningProvider]) -> Iterator[httpx.Client]:
    """The environment key (an admin): makes the two knowledge bases before anyone signs in."""
    with gateway_client(sso_stack[0]) as client:
        ingest(client, "finance-docs", FINANCE)
        ingest(client, "hr-docs", HR)
        yield client


def in_page(page: Page, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request from the page itself: the session cookie goes along, as the UI's own requests
    do, with the CSRF token from /v1/auth/me on writes."""
    result: dict[str, Any] = page.evaluate(
        """async ([method, path, body]) => {
            const me = await (await fetch("/v1/auth/me", {credentials: "same-origin"})).json();
            const headers = {"Content-Type": "application/json"};
            if (me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
            const answer = await fetch(path, {
                method, headers, credentials: "same-origin",
                body: body === null ? undefined : JSON.stringify(body),
            });
            return {status: answer.status, body: await answer.json().catch(() => null)};
        }""",
        [method, path, body],
    )
    return result


def test_sso_sign_in_maps_the_group_to_a_role_and_sign_out_ends_it(
    sso_stack: tuple[BackgroundStack, RunningProvider], admin_api: httpx.Client, page: Page, output_dir: Path
) -> None:
    stack, provider = sso_stack
    page.goto(f"{stack.url}/#/kb")
    sign_in = page.get_by_test_id("signin-page")
    expect(sign_in).to_be_visible()
    button = sign_in.get_by_test_id("signin-sso")
    expect(button).to_have_text(f"Sign in with {LABEL}")
    page.screenshot(path=output_dir / "sso-sign-in-page.png")
    button.click()

    # The provider's own pages: its login form (any password), then consent.
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    page.locator("input[name=login]").fill("mei")
    page.locator("input[name=password]").fill("correct horse battery staple")
    page.screenshot(path=output_dir / "sso-provider-login.png")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()

    # Back in the UI, on the page the button was pressed on, signed in.
    page.wait_for_url(f"{stack.url}/#/kb")
    expect(page.get_by_test_id("current-user")).to_have_text("Mei Chen")
    # The knowledge base list shows what the mapped group may view, and nothing else.
    items = page.get_by_test_id("kb-item")
    expect(items.and_(page.locator("[data-name=finance-docs]"))).to_be_visible()
    expect(items.and_(page.locator("[data-name=hr-docs]"))).to_have_count(0)
    page.screenshot(path=output_dir / "sso-signed-in.png")
    me = page.evaluate("async () => (await fetch('/v1/auth/me')).json()")
    assert me["auth"] == "session"
    assert me["user"]["email"] == "mei@acme.example"
    assert me["user"]["sso"] is True
    assert me["user"]["groups"] == ["finance"]  # acme-all is not in the group map

    query = {"query": "which budget code do flights use?", "top_k": 3}
    allowed = in_page(page, "POST", "/v1/knowledge_bases/finance-docs/search", query)
    assert allowed["status"] == 200, allowed
    assert "FX-2207" in " ".join(hit["text"] for hit in allowed["body"]["data"])
    refused = in_page(page, "POST", "/v1/knowledge_bases/hr-docs/search", query)
    assert refused["status"] in (403, 404), refused
    assert "HR-LEAVE-9" not in json.dumps(refused["body"])

    # The session cookie works from anywhere until sign-out, and from nowhere after it.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "zhiku_session")
    with httpx.Client(base_url=stack.url, cookies={"zhiku_session": token}, timeout=30) as stolen:
        assert stolen.get("/v1/knowledge_bases/finance-docs").status_code == 200
        page.get_by_test_id("signout").click()
        expect(page.get_by_test_id("signin-page")).to_be_visible()
        assert stolen.get("/v1/knowledge_bases/finance-docs").status_code == 401
        me_after = stolen.get("/v1/auth/me")
        assert me_after.status_code == 401 or me_after.json()["user"] is None, me_after.text
    gone = in_page(page, "POST", "/v1/knowledge_bases/finance-docs/search", query)
    assert gone["status"] == 401, gone
    # The person stays known to Zhiku (no password, SSO) for the next sign-in.
    mei = [user for user in admin_api.get("/v1/users").json()["data"] if user["email"] == "mei@acme.example"]
    assert len(mei) == 1 and mei[0]["sso"] and mei[0]["groups"] == ["finance"]
