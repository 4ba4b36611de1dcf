"""People in the web UI, against the real stack with a first admin from configuration: sign in
with a password and see the knowledge base shared with you; add a member in the Members tab
and change their role; the admin page creates a user and a group; a file's access list is
edited in its dialog; a wrong password is refused on the sign-in page; sign out; the web UI's
half of ``zhiku login --sso`` hands the CLI a key of the signed-in person.

Everything the UI changes is read back through the API with the stack's key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect
from typer.testing import Result

from services.cli.tests.conftest import Cli
from tests.ui.conftest import gateway_client, ingest, launch_ui_stack

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "ui-admin-password-1"
ANN_PASSWORD = "ann-password-123"
KB = "team_docs"
FILE = "salaries.txt"


@dataclass
class People:
    api: httpx.Client
    ann_email: str
    ann_id: str
    bob_email: str
    bob_id: str


def create_user(api: httpx.Client, email: str, name: str, password: str) -> str:
    reply = api.post("/v1/users", json={"email": email, "display_name": name, "password": password})
    assert reply.status_code in (200, 201), reply.text
    return str(reply.json()["id"])


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[People]:
    env = {"ZHIKU_GATEWAY_ADMIN_EMAIL": ADMIN_EMAIL, "ZHIKU_GATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD}
    stack = launch_ui_stack(
        tmp_path_factory.mktemp("zhiku-ui-identity"), output_dir / "stack-identity.log", env
    )
    try:
        with gateway_client(stack) as api:
            ann_email, bob_email = "ann@example.com", "bob@example.com"
            ann_id = create_user(api, ann_email, "Ann", ANN_PASSWORD)
            bob_id = create_user(api, bob_email, "Bob", "bob-password-123")
            ingest(api, KB, {FILE: "The salary bands for 2026 are A, B and C.\n"})
            shared = api.put(
                f"/v1/knowledge_bases/{KB}/members", json={"kind": "user", "id": ann_id, "role": "owner"}
            )
            assert shared.status_code in (200, 201, 204), shared.text
            yield People(api, ann_email, ann_id, bob_email, bob_id)
    finally:
        stack.stop()


def sign_in(page: Page, base: str, email: str, password: str, path: str = "/#/kb") -> None:
    page.goto(f"{base}{path}")
    signin = page.get_by_test_id("signin-page")
    expect(signin).to_be_visible()
    # No SSO configured here: the gateway says so, and the button is not offered.
    expect(signin.get_by_test_id("signin-sso")).to_have_count(0)
    signin.get_by_test_id("signin-email").fill(email)
    signin.get_by_test_id("signin-password").fill(password)
    signin.get_by_test_id("signin-submit").click()
    expect(signin).to_have_count(0)


def members_of(api: httpx.Client, kb: str) -> dict[tuple[str, str], str]:
    reply = api.get(f"/v1/knowledge_bases/{kb}/members")
    reply.raise_for_status()
    return {(m["kind"], m["id"]): m["role"] for m in reply.json()["members"]}


def test_wrong_password_stays_on_the_sign_in_page(page: Page, people: People) -> None:
    base = str(people.api.base_url).rstrip("/")
    page.goto(f"{base}/#/kb")
    signin = page.get_by_test_id("signin-page")
    signin.get_by_test_id("signin-email").fill(people.ann_email)
    signin.get_by_test_id("signin-password").fill("wrong-password")
    signin.get_by_test_id("signin-submit").click()
    expect(signin.get_by_test_id("signin-error")).to_be_visible()
    expect(signin).to_be_visible()
    expect(page.get_by_test_id("current-user")).to_be_hidden()


def test_sign_in_members_tab_file_access_and_sign_out(page: Page, people: People, output_dir: Path) -> None:
    base = str(people.api.base_url).rstrip("/")
    sign_in(page, base, people.ann_email, ANN_PASSWORD)
    expect(page.get_by_test_id("current-user")).to_have_text("Ann")
    expect(page.get_by_test_id("nav-admin")).to_be_hidden()  # Ann is no admin
    expect(page.get_by_test_id("api-key-button")).to_be_hidden()
    item = page.locator(f'[data-testid="kb-item"][data-name="{KB}"]')
    expect(item).to_be_visible()
    item.locator("button").click()
    expect(page.locator(f'[data-testid="file-row"][data-file="{FILE}"]')).to_be_visible()

    # Members tab: Ann (owner) adds Bob as a viewer, then makes him an editor.
    page.get_by_test_id("kb-tab-members").click()
    ann_row = page.locator(f'[data-testid="member-row"][data-id="{people.ann_id}"]')
    expect(ann_row).to_have_attribute("data-role", "owner")
    form = page.get_by_test_id("member-form")
    form.get_by_test_id("member-kind").select_option("user")
    form.get_by_test_id("member-who").fill(people.bob_email)
    form.get_by_test_id("member-new-role").select_option("viewer")
    with page.expect_request(lambda r: r.method == "PUT" and r.url.endswith("/members")) as sent:
        form.get_by_test_id("member-add").click()
    # A cookie-authenticated write carries the session's CSRF token.
    assert sent.value.headers.get("x-csrf-token")
    bob_row = page.locator('[data-testid="member-row"][data-kind="user"]').filter(has_text="bob")
    expect(bob_row).to_have_attribute("data-role", "viewer")
    bob_id = bob_row.get_attribute("data-id") or ""
    assert members_of(people.api, KB)[("user", bob_id)] == "viewer"
    bob_row.get_by_test_id("member-role").select_option("editor")
    expect(page.locator(f'[data-testid="member-row"][data-id="{bob_id}"]')).to_have_attribute(
        "data-role", "editor"
    )
    assert members_of(people.api, KB)[("user", bob_id)] == "editor"
    page.screenshot(path=str(output_dir / "identity-members.png"))

    # The file's access list: restrict it to Bob; the gateway keeps it.
    page.get_by_test_id("kb-tab-files").click()
    page.locator(f'[data-testid="file-row"][data-file="{FILE}"]').get_by_test_id("file-access").click()
    dialog = page.get_by_test_id("access-dialog")
    expect(dialog.get_by_test_id("access-summary")).to_contain_text("Everyone")
    dialog.get_by_test_id("access-user-input").fill(people.bob_email)
    dialog.get_by_test_id("access-add-user").click()
    expect(dialog.locator('[data-testid="access-entry"][data-kind="user"]')).to_have_count(1)
    page.screenshot(path=str(output_dir / "identity-file-access.png"))
    with page.expect_request(lambda r: r.method == "PUT" and r.url.endswith("/access")) as put:
        dialog.get_by_test_id("access-save").click()
    expect(dialog).to_have_count(0)
    sent_access = json.loads(put.value.post_data or "{}")
    assert sent_access["groups"] == [] and len(sent_access["users"]) == 1
    stored = people.api.get(f"/v1/knowledge_bases/{KB}/files/{FILE}/access").json()
    assert people.bob_id in stored["users"], stored
    # Reopened, it shows what the gateway holds.
    page.locator(f'[data-testid="file-row"][data-file="{FILE}"]').get_by_test_id("file-access").click()
    dialog = page.get_by_test_id("access-dialog")
    expect(dialog.locator(f'[data-testid="access-entry"][data-id="{people.bob_id}"]')).to_contain_text(
        people.bob_email
    )
    dialog.get_by_test_id("access-remove").first.click()
    dialog.get_by_test_id("access-save").click()
    expect(dialog).to_have_count(0)
    assert people.api.get(f"/v1/knowledge_bases/{KB}/files/{FILE}/access").json()["users"] == []

    page.get_by_test_id("signout").click()
    expect(page.get_by_test_id("signin-page")).to_be_visible()
    expect(page.get_by_test_id("current-user")).to_be_hidden()


def test_admin_page_creates_a_user_and_a_group(page: Page, people: People, output_dir: Path) -> None:
    base = str(people.api.base_url).rstrip("/")
    sign_in(page, base, ADMIN_EMAIL, ADMIN_PASSWORD, "/#/admin")
    expect(page.get_by_test_id("nav-admin")).to_be_visible()
    expect(page.locator(f'[data-testid="user-row"][data-email="{ADMIN_EMAIL}"]')).to_have_attribute(
        "data-admin", "true"
    )

    email = f"dana-{uuid.uuid4().hex[:6]}@example.com"
    form = page.get_by_test_id("new-user-form")
    form.get_by_test_id("new-user-email").fill(email)
    form.get_by_test_id("new-user-name").fill("Dana")
    form.get_by_test_id("new-user-password").fill("dana-password-1")
    form.get_by_test_id("new-user-create").click()
    row = page.locator(f'[data-testid="user-row"][data-email="{email}"]')
    expect(row).to_be_visible()
    users = {u["email"]: u for u in people.api.get("/v1/users").json()["data"]}
    assert users[email]["display_name"] == "Dana" and not users[email]["admin"]

    row.get_by_test_id("user-toggle-admin").click()
    expect(row).to_have_attribute("data-admin", "true")
    row.get_by_test_id("user-toggle-disabled").click()
    expect(row).to_have_attribute("data-disabled", "true")
    users = {u["email"]: u for u in people.api.get("/v1/users").json()["data"]}
    assert users[email]["admin"] and users[email]["disabled"]

    group = f"ops-{uuid.uuid4().hex[:6]}"
    page.get_by_test_id("new-group-name").fill(group)
    page.get_by_test_id("new-group-display").fill("Operations")
    page.get_by_test_id("new-group-create").click()
    card = page.locator(f'[data-testid="group-card"][data-name="{group}"]')
    expect(card).to_be_visible()
    card.get_by_test_id("group-member-input").fill(email)
    card.get_by_test_id("group-member-add").click()
    expect(card.get_by_test_id("group-member")).to_have_count(1)
    user = next(u for u in people.api.get("/v1/users").json()["data"] if u["email"] == email)
    assert group in user["groups"]
    page.screenshot(path=str(output_dir / "identity-admin.png"))
    # The signed-in admin keeps working: a new page load reads the session again.
    page.reload()
    expect(page.get_by_test_id("current-user")).to_be_visible()


def test_cli_browser_sign_in_hands_a_key_to_the_terminal(
    page: Page, people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``zhiku login --sso`` without the provider hop: the CLI's browser command only records
    the address; Chromium opens where the provider would send it back (``next``), signs in
    there with a password, and the cli-login page hands a fresh key to the CLI's listener."""
    base = str(people.api.base_url).rstrip("/")
    opened = tmp_path / "opened-url"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    webbrowser._tryorder = None  # type: ignore[attr-defined]  # re-read BROWSER on the next open

    cli = Cli(base, None)
    results: list[Result] = []
    login = threading.Thread(target=lambda: results.append(cli("login", "--sso")))
    login.start()
    deadline = time.monotonic() + 30
    while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    url = urlsplit(opened.read_text())
    assert url.path == "/v1/auth/oidc/login"
    next_path = parse_qs(url.query)["next"][0]
    assert next_path.startswith("/#/cli-login?port=")

    sign_in(page, base, people.ann_email, ANN_PASSWORD, next_path)
    expect(page.locator("body")).to_contain_text("You may close this tab")
    login.join(30)
    assert results and results[0].exit_code == 0, results[0].output if results else "login still waiting"
    assert people.ann_email in results[0].stdout

    stored = json.loads(cli.config.read_text())["gateways"][base]
    assert stored["api_key"] and stored["key_id"] and "session" not in stored
    who = cli("whoami")
    assert who.exit_code == 0 and people.ann_email in who.stdout and "signed in with: key" in who.stdout
    # The key is Ann's: it sees her knowledge base.
    assert KB in cli("kb", "list").stdout
    # Signing out revokes that key on the gateway.
    assert cli("logout").exit_code == 0
    refused = httpx.get(
        f"{base}/v1/knowledge_bases", headers={"Authorization": f"Bearer {stored['api_key']}"}
    )
    assert refused.status_code == 401


def test_a_viewer_sees_the_knowledge_base_but_not_its_members(page: Page, people: People) -> None:
    base = str(people.api.base_url).rstrip("/")
    granted = people.api.put(
        f"/v1/knowledge_bases/{KB}/members", json={"kind": "user", "id": people.bob_email, "role": "viewer"}
    )
    assert granted.status_code == 200, granted.text
    sign_in(page, base, people.bob_email, "bob-password-123")
    page.locator(f'[data-testid="kb-item"][data-name="{KB}"] button').click()
    page.get_by_test_id("kb-tab-members").click()
    expect(page.get_by_test_id("members-denied")).to_be_visible()
    expect(page.get_by_test_id("member-form")).to_have_count(0)
    expect(page.get_by_test_id("toast-error")).to_have_count(0)
