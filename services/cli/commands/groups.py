"""``zhiku groups list|add|add-member|remove-member``: teams that hold roles (admins only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from services.cli import render
from services.cli.context import current, reports_errors

app = typer.Typer(
    help="List and create groups and change who is in them (needs an admin).", no_args_is_help=True
)

GroupArgument = Annotated[str, typer.Argument(help="group name", show_default=False)]
UserArgument = Annotated[str, typer.Argument(help="the user's email (or id)", show_default=False)]


@app.command("list")
@reports_errors
def list_groups(ctx: typer.Context) -> None:
    """Every group with its members."""
    state = current(ctx)
    with state.client() as client:
        groups = client.list_groups()
        users = client.list_users() if groups else []
    if not groups:
        state.console.print("No groups yet: `zhiku groups add NAME`.")
        return
    state.console.print(render.groups_table(groups, users))


@app.command("add")
@reports_errors
def add(
    ctx: typer.Context,
    name: GroupArgument,
    display_name: Annotated[
        str, typer.Option("--display-name", "-d", help="shown name (default: the name)")
    ] = "",
) -> None:
    """Create a group (a short slug: a-z, 0-9, - and _)."""
    state = current(ctx)
    with state.client() as client:
        client.create_group(name, display_name)
    state.console.print(f"Created group [bold]{escape(name)}[/].")


@app.command("add-member")
@reports_errors
def add_member(ctx: typer.Context, group: GroupArgument, user: UserArgument) -> None:
    """Put a user in a group: they get every role the group holds."""
    state = current(ctx)
    with state.client() as client:
        client.add_group_member(group, client.resolve_user(user))
    state.console.print(f"{escape(user)} is now in [bold]{escape(group)}[/].")


@app.command("remove-member")
@reports_errors
def remove_member(ctx: typer.Context, group: GroupArgument, user: UserArgument) -> None:
    """Take a user out of a group."""
    state = current(ctx)
    with state.client() as client:
        client.remove_group_member(group, client.resolve_user(user))
    state.console.print(f"{escape(user)} is no longer in [bold]{escape(group)}[/].")
