"""``zhiku users list|add|disable|admin``: people on the gateway (admins only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from services.cli import render
from services.cli.context import call_and_print, reports_errors

app = typer.Typer(help="List, add, disable and promote users (needs an admin).", no_args_is_help=True)

Who = Annotated[str, typer.Argument(help="the user's email (or id)", show_default=False)]


@app.command("list")
@reports_errors
def list_users(ctx: typer.Context) -> None:
    """Every user with their groups, admin flag and state."""
    call_and_print(ctx, lambda client: client.list_users(), render.users_table)


@app.command("add")
@reports_errors
def add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="the new user's email", show_default=False)],
    name: Annotated[str, typer.Option("--name", "-n", help="display name (default: the email)")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="make the user an admin")] = False,
    sso_only: Annotated[
        bool, typer.Option("--sso-only", help="no password: the user signs in through SSO only")
    ] = False,
) -> None:
    """Create a user; asks for their first password (twice) unless --sso-only."""
    password = None if sso_only else typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    call_and_print(
        ctx,
        lambda client: client.create_user(email, name or email, password, admin),
        lambda user: (
            f"Created user [bold]{escape(str(user.get('email', email)))}[/] "
            f"({escape(str(user.get('id', '')))})."
        ),
    )


@app.command("disable")
@reports_errors
def disable(
    ctx: typer.Context,
    who: Who,
    enable: Annotated[bool, typer.Option("--enable", help="enable the user again instead")] = False,
) -> None:
    """Disable a user: their sessions and keys stop working (--enable undoes it)."""
    _change_user(
        ctx, who, f"{'Enabled' if enable else 'Disabled'} [bold]{escape(who)}[/].", disabled=not enable
    )


@app.command("admin")
@reports_errors
def admin(
    ctx: typer.Context,
    who: Who,
    revoke: Annotated[bool, typer.Option("--revoke", help="take the admin role away instead")] = False,
) -> None:
    """Make a user an admin (--revoke takes it away)."""
    _change_user(
        ctx, who, f"[bold]{escape(who)}[/] is {'no longer' if revoke else 'now'} an admin.", admin=not revoke
    )


def _change_user(ctx: typer.Context, who: str, said: str, **change: bool) -> None:
    """Set flags of one user (``who``: email or id), then print ``said``."""
    call_and_print(ctx, lambda client: client.update_user(client.resolve_user(who), **change), lambda _: said)
