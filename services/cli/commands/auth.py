"""``zhiku login|logout|whoami``: sign in to a gateway as a person and remember it.

Password login stores the gateway's session cookie and its CSRF token (sent on every request,
as the gateway wants for cookie-authenticated writes); ``--sso`` stores an API key that the web
UI mints for the person after the identity provider signed them in (see services/cli/sso.py).
Both live in the CLI's config file (services/cli/credentials.py, mode 0600), per gateway URL.
"""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer
from rich.markup import escape

from services.cli import credentials
from services.cli.client import ApiError, ClientError, ZhikuClient
from services.cli.context import EXIT_AUTH, current, fail, reports_errors
from services.cli.sso import LoopbackLogin

SSO_WAIT_S = 300.0


@reports_errors
def login(
    ctx: typer.Context,
    email: Annotated[
        str | None, typer.Option("--email", "-e", help="your email (asked when missing)")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input (scripts)")
    ] = False,
    sso: Annotated[
        bool, typer.Option("--sso", help="sign in in the browser through the identity provider")
    ] = False,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="with --sso: print the URL and paste the key shown there")
    ] = False,
) -> None:
    """Sign in with your email and password (or --sso) and remember it for this gateway."""
    state = current(ctx)
    if sso:
        _login_sso(ctx, no_browser)
        return
    address = email or typer.prompt("Email")
    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    with ZhikuClient(state.url, None, state.timeout_s) as client:
        try:
            signed = client.login(address, password)
        except ApiError as error:
            if error.status in (401, 403):
                raise fail(state, f"sign-in refused: {error.message}", EXIT_AUTH) from None
            raise
    user = signed["user"]
    path = credentials.save(
        state.url,
        credentials.Credentials(
            email=user.get("email", address), session=signed["session"], csrf_token=signed["csrf_token"]
        ),
    )
    state.console.print(f"Signed in to {escape(state.url)} as [bold]{escape(user.get('email', address))}[/].")
    state.console.print(f"[dim]Session stored in {escape(str(path))} (readable by you only).[/]")


def _login_sso(ctx: typer.Context, no_browser: bool) -> None:
    state = current(ctx)
    listener = None if no_browser else LoopbackLogin()
    if listener is None:
        url = f"{state.url.rstrip('/')}/v1/auth/oidc/login?next=%2F%23%2Fcli-login"
        state.console.print(f"Open this address in a browser and sign in:\n  {url}")
        key = typer.prompt("Key shown in the browser", hide_input=True).strip()
        key_id = None
    else:
        url = listener.login_url(state.url)
        state.console.print(f"Opening the browser to sign in (or open it yourself):\n  {url}")
        webbrowser.open(url)
        handed = listener.wait(SSO_WAIT_S)
        if handed is None:
            raise fail(state, f"no sign-in came back within {SSO_WAIT_S:.0f} s", EXIT_AUTH)
        key, key_id = handed.key, handed.key_id
    with ZhikuClient(state.url, key, state.timeout_s) as client:
        who = client.me()
    user = who.get("user") or {}
    credentials.save(
        state.url, credentials.Credentials(email=str(user.get("email", "")), api_key=key, key_id=key_id)
    )
    state.console.print(
        f"Signed in to {escape(state.url)} as [bold]{escape(str(user.get('email', '?')))}[/]."
    )


@reports_errors
def logout(ctx: typer.Context) -> None:
    """End the stored session (or revoke the key --sso made) and forget it."""
    state = current(ctx)
    stored = state.stored()
    if stored is None:
        state.console.print(f"Not signed in to {escape(state.url)}.")
        return
    try:
        with state.client() as client:
            if stored.session:
                client.logout()
            elif stored.key_id:
                client.revoke_key(stored.key_id)
    except ClientError as error:  # gone or unreachable: forgetting it here still signs out locally
        state.errors.print(f"[yellow]The gateway did not confirm the sign-out:[/] {escape(str(error))}")
    credentials.forget(state.url)
    state.console.print(f"Signed out of {escape(state.url)}.")


@reports_errors
def whoami(ctx: typer.Context) -> None:
    """Who the gateway takes you for: the person, their groups, and how you are signed in."""
    state = current(ctx)
    with state.client() as client:
        who = client.me()
    user = who.get("user")
    auth = str(who.get("auth") or "")
    if not user:
        label = {"open": "nobody (the gateway is open)", "key": "an API key without a user"}.get(
            auth, "nobody"
        )
        state.console.print(f"Signed in as {label}.")
        return
    groups = ", ".join(user.get("groups") or []) or "none"
    state.console.print(
        f"[bold]{escape(str(user.get('email', '')))}[/] ({escape(str(user.get('display_name', '')))})"
    )
    state.console.print(f"id: {escape(str(user.get('id', '')))}")
    state.console.print(f"admin: {'yes' if user.get('admin') else 'no'}")
    state.console.print(f"groups: {escape(groups)}")
    state.console.print(f"signed in with: {escape(auth or 'unknown')}")
