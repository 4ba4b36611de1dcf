"""``zhiku login --sso`` the whole way, against npm's oidc-provider on loopback: the CLI opens
"the browser" (a BROWSER command that records the address; headless Chromium then opens it),
the provider's login and consent pages sign the person in, the gateway's callback sends the
browser to the web UI's cli-login page, which mints a key owned by that person and hands it to
the CLI's loopback listener. The CLI then works as that person (whoami, the knowledge base
their group may view) and ``zhiku logout`` revokes the key.
"""

from __future__ import annotations

import json
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect
from typer.testing import Result

from launcher.stack import BackgroundStack, free_port
from services.cli.tests.conftest import Cli
from testing.oidc_provider import RunningProvider, provider_client, running_provider
from tests.ui.conftest import gateway_client, ingest, launch_ui_stack

CLIENT_ID = "zhiku-cli-test"
CLIENT_SECRET = "cli-sso-client-secret"
ACCOUNTS = {"li": {"email": "li@acme.example", "name": "Li Wei", "groups": ["acme-support"]}}
GROUP_MAP = {"acme-support": {"group": "support", "knowledge_bases": {"support-docs": "viewer"}}}


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
        "ZHIKU_GATEWAY_OIDC_GROUP_MAP": json.dumps(GROUP_MAP),
    }
    stack = launch_ui_stack(tmp_path_factory.mktemp("zhiku-cli-sso"), output_dir / "cli-sso-stack.log", env)
    try:
        with gateway_client(stack) as api:
            ingest(api, "support-docs", {"faq.txt": "Support hours are 9 to 18, the hotline is 4000-123."})
            ingest(api, "board-docs", {"minutes.txt": "Board minutes: nothing for support to read."})
        client = provider_client(CLIENT_ID, f"{stack.url}/v1/auth/oidc/callback", CLIENT_SECRET)
        with running_provider([client], ACCOUNTS, port=provider_port) as provider:
            yield stack, provider
    finally:
        stack.stop()


def test_cli_sso_login_through_the_provider(
    sso_stack: tuple[BackgroundStack, RunningProvider],
    page: Page,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack, provider = sso_stack
    opened = tmp_path / "opened-url"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    webbrowser._tryorder = None  # type: ignore[attr-defined]  # re-read BROWSER on the next open

    cli = Cli(stack.url, None)
    results: list[Result] = []
    login = threading.Thread(target=lambda: results.append(cli("login", "--sso")))
    login.start()
    deadline = time.monotonic() + 30
    while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    address = opened.read_text()
    parts = urlsplit(address)
    assert parts.path == "/v1/auth/oidc/login"
    assert parse_qs(parts.query)["next"][0].startswith("/#/cli-login?port=")

    page.goto(address)
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    page.locator("input[name=login]").fill("li")
    page.locator("input[name=password]").fill("any password works here")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("body")).to_contain_text("You may close this tab", timeout=30_000)

    login.join(30)
    assert results, "zhiku login --sso still waiting"
    assert results[0].exit_code == 0, results[0].output
    assert "li@acme.example" in results[0].stdout

    stored = json.loads(cli.config.read_text())["gateways"][stack.url.rstrip("/")]
    assert stored["api_key"] and stored["key_id"]
    who = cli("whoami")
    assert who.exit_code == 0, who.output
    assert "li@acme.example" in who.stdout and "groups: support" in who.stdout
    listed = cli("kb", "list")
    assert "support-docs" in listed.stdout and "board-docs" not in listed.stdout

    assert cli("logout").exit_code == 0
    refused = httpx.get(
        f"{stack.url}/v1/knowledge_bases", headers={"Authorization": f"Bearer {stored['api_key']}"}
    )
    assert refused.status_code == 401
