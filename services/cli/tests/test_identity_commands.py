"""People from the terminal against a real stack with a first admin from configuration:
``zhiku login`` (stored owner-only, the session and its CSRF token sent on writes), ``whoami``,
``users``, ``groups``, ``kb share/members/unshare``, a shared person's view, ``logout``.

Each person runs with their own config file (the ``Cli`` helper gives every instance one), and
no ``--api-key``, so every command here goes through the stored sign-in.
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import Result

from launcher.stack import BackgroundStack, launch_in_background
from services.cli.context import EXIT_AUTH
from services.cli.tests.conftest import ADMIN_KEY, FAST_STACK_ENV, OUTPUT, Cli

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "first-admin-password-1"
BOB_PASSWORD = "bobs-password-123"


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
    return result


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    env = {
        **FAST_STACK_ENV,
        "ZHIKU_GATEWAY_API_KEYS": ADMIN_KEY,
        "ZHIKU_GATEWAY_ADMIN_EMAIL": ADMIN_EMAIL,
        "ZHIKU_GATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    try:
        running = launch_in_background(
            tmp_path_factory.mktemp("cli-identity"), OUTPUT / "identity-stack.log", env=env
        )
    except RuntimeError as error:
        pytest.fail(str(error))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(stack: BackgroundStack) -> Cli:
    """The first admin, signed in through ``zhiku login`` with the password on stdin."""
    cli = Cli(stack.url, None)
    ok(cli("login", "--email", ADMIN_EMAIL, "--password-stdin", input=ADMIN_PASSWORD + "\n"))
    return cli


def sign_in(url: str, email: str, password: str) -> Cli:
    cli = Cli(url, None)
    ok(cli("login", "--email", email, "--password-stdin", input=password + "\n"))
    return cli


def test_login_stores_an_owner_only_session_and_whoami_reads_it(admin: Cli, stack: BackgroundStack) -> None:
    assert stat.S_IMODE(admin.config.stat().st_mode) == 0o600
    stored = json.loads(admin.config.read_text())["gateways"][stack.url.rstrip("/")]
    assert stored["email"] == ADMIN_EMAIL and stored["session"] and stored["csrf_token"]
    assert ADMIN_PASSWORD not in admin.config.read_text()
    who = ok(admin("whoami")).stdout
    assert ADMIN_EMAIL in who and "admin: yes" in who and "signed in with: session" in who


def test_wrong_password_is_refused_and_nothing_is_stored(stack: BackgroundStack) -> None:
    cli = Cli(stack.url, None)
    refused = cli("login", "--email", ADMIN_EMAIL, "--password-stdin", input="not-the-password\n")
    assert refused.exit_code == EXIT_AUTH, refused.output
    assert "sign-in refused" in refused.stderr
    assert not cli.config.exists()
    # Not signed in: a command says how to sign in.
    anonymous = cli("kb", "list")
    assert anonymous.exit_code == EXIT_AUTH and "zhiku login" in anonymous.stderr


def test_users_groups_and_sharing_end_to_end(admin: Cli, stack: BackgroundStack) -> None:
    bob_email = f"{unique('bob')}@example.com"
    # The password is asked twice (confirmation), never taken from the command line.
    ok(admin("users", "add", bob_email, "--name", "Bob", input=f"{BOB_PASSWORD}\n{BOB_PASSWORD}\n"))
    listed = ok(admin("users", "list")).stdout
    assert bob_email in listed and "Bob" in listed

    team = unique("sales")
    ok(admin("groups", "add", team, "-d", "Sales team"))
    ok(admin("groups", "add-member", team, bob_email))
    groups = ok(admin("groups", "list")).stdout
    row = next(line for line in groups.splitlines() if team in line)
    assert bob_email in row

    # A write through the session: the CSRF token goes along, or this POST would be refused.
    kb = unique("shared").replace("-", "_")
    ok(admin("kb", "create", kb))
    bob = sign_in(stack.url, bob_email, BOB_PASSWORD)
    assert kb not in ok(bob("kb", "list")).stdout, "not shared yet"

    ok(admin("kb", "share", kb, "--user", bob_email, "--role", "viewer"))
    members = ok(admin("kb", "members", kb)).stdout
    bob_row = next(line for line in members.splitlines() if "user" in line and "viewer" in line)
    assert "Bob" in bob_row or bob_email in bob_row
    assert kb in ok(bob("kb", "list")).stdout
    # A viewer may not share it on.
    denied = bob("kb", "share", kb, "--group", team, "--role", "owner")
    assert denied.exit_code == EXIT_AUTH, denied.output

    ok(admin("kb", "share", kb, "--group", team, "--role", "editor"))
    members = ok(admin("kb", "members", kb)).stdout
    assert any(team in line and "editor" in line for line in members.splitlines()), members
    ok(admin("kb", "unshare", kb, "--user", bob_email))
    ok(admin("kb", "unshare", kb, "--group", team))
    assert kb not in ok(bob("kb", "list")).stdout

    # exactly one of --user / --group
    both = admin("kb", "share", kb, "--user", bob_email, "--group", team)
    assert both.exit_code == 1 and "exactly one of" in both.stderr

    ok(admin("groups", "remove-member", team, bob_email))
    groups = ok(admin("groups", "list")).stdout
    assert bob_email not in next(line for line in groups.splitlines() if team in line)

    ok(admin("users", "admin", bob_email))
    assert "admin: yes" in ok(bob("whoami")).stdout
    ok(admin("users", "admin", bob_email, "--revoke"))
    assert "admin: no" in ok(bob("whoami")).stdout

    # Disabled: the stored session stops working, and the message says to sign in again.
    ok(admin("users", "disable", bob_email))
    refused = bob("kb", "list")
    assert refused.exit_code == EXIT_AUTH, refused.output
    ok(admin("users", "disable", bob_email, "--enable"))


def test_non_admin_cannot_manage_users(admin: Cli, stack: BackgroundStack) -> None:
    email = f"{unique('carol')}@example.com"
    ok(admin("users", "add", email, input="carol-password-1\ncarol-password-1\n"))
    carol = sign_in(stack.url, email, "carol-password-1")
    denied = carol("users", "add", f"{unique('x')}@example.com", "--sso-only")
    assert denied.exit_code == EXIT_AUTH, denied.output


def test_logout_ends_the_session_on_the_gateway(stack: BackgroundStack) -> None:
    cli = sign_in(stack.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    stored = json.loads(cli.config.read_text())["gateways"][stack.url.rstrip("/")]
    assert ok(cli("logout")).stdout.startswith("Signed out")
    assert stack.url.rstrip("/") not in json.loads(cli.config.read_text())["gateways"]
    # The old cookie no longer works anywhere: the gateway dropped the session, not only us.
    with httpx.Client(base_url=stack.url, cookies={"zhiku_session": stored["session"]}) as http:
        assert http.get("/v1/knowledge_bases").status_code == 401
    assert "Not signed in" in ok(cli("logout")).stdout


def ok_id(http: httpx.Client, email: str) -> str:
    return next(u["id"] for u in http.get("/v1/users").json()["data"] if u["email"] == email)


def test_file_access_from_upload_to_open(
    admin: Cli, stack: BackgroundStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dave_email = f"{unique('dave')}@example.com"
    ok(admin("users", "add", dave_email, "--sso-only"))
    kb = unique("acl").replace("-", "_")
    ok(admin("kb", "create", kb))
    folder = tmp_path_factory.mktemp("acl-files")
    (folder / "payroll.txt").write_text("Payroll closes on the 25th of each month.\n", encoding="utf-8")
    ok(admin("ingest", str(folder / "payroll.txt"), "--kb", kb, "--reader", dave_email))

    shown = ok(admin("files", "access", kb, "payroll.txt")).stdout
    # The uploader (the admin, a person here) stays on a restricted list; Dave is on it by email.
    assert dave_email in shown and "groups: -" in shown, shown

    team = unique("hr")
    ok(admin("groups", "add", team))
    replaced = ok(admin("files", "access", kb, "payroll.txt", "--group", team)).stdout
    assert team in replaced and dave_email not in replaced
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        stored = http.get(f"/v1/knowledge_bases/{kb}/files/payroll.txt/access").json()
        assert stored["groups"] == [team]
        # The gateway takes emails in an access list too (an editor cannot list users), and
        # names the one nobody has instead of storing a token that matches nobody.
        by_email = http.put(
            f"/v1/knowledge_bases/{kb}/files/payroll.txt/access", json={"users": [dave_email], "groups": []}
        )
        assert by_email.status_code == 200, by_email.text
        assert ok_id(http, dave_email) in by_email.json()["users"]  # beside the uploader, kept
        unknown = http.put(
            f"/v1/knowledge_bases/{kb}/files/payroll.txt/access", json={"users": ["nobody@example.com"]}
        )
        assert unknown.status_code == 422 and "nobody@example.com" in unknown.json()["error"]["message"]

    opened = ok(admin("files", "access", kb, "payroll.txt", "--open")).stdout
    assert "everyone who may view" in opened
    both = admin("files", "access", kb, "payroll.txt", "--open", "--group", team)
    assert both.exit_code == 1 and "--open clears the list" in both.stderr
    missing = admin("files", "access", kb, "nope.txt")
    assert missing.exit_code == 5, missing.output
