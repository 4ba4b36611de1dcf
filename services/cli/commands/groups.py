"""``zhiku groups list|add|add-member|remove-member``: teams that hold roles (admins only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape

from services.cli import render
from services.cli.client import Group, User, ZhikuClient
from services.cli.context import call_and_print, reports_errors

app = typer.Typer(
    help="List and create groups and change who is in them (needs an admin).", no_args_is_help=True
)

GroupArgument = Annotated[str, typer.Argument(help="group name", show_default=False)]
UserArgument = Annotated[str, typer.Argument(help="the user's email (or id)", show_default=False)]


@app.command("list")
@reports_errors
def list_groups(ctx: typer.Context) -> None:
    """Every group with its members."""

    def fetch(client: ZhikuClient) -> tuple[list[Group], list[User]]:
        groups = client.list_groups()
        return groups, client.list_users() if groups else []  # the users name the members

    def shown(found: tuple[list[Group], list[User]]) -> RenderableType:
        groups, users = found
        return render.groups_table(groups, users) if groups else "No groups yet: `zhiku groups add NAME`."

    call_and_print(ctx, fetch, shown)


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
    call_and_print(
        ctx,
        lambda client: client.create_group(name, display_name),
        lambda _: f"Created group [bold]{escape(name)}[/].",
    )


@app.command("add-member")
@reports_errors
def add_member(ctx: typer.Context, group: GroupArgument, user: UserArgument) -> None:
    """Put a user in a group: they get every role the group holds."""
    _change_members(ctx, ZhikuClient.add_group_member, group, user, "is now in")


@app.command("remove-member")
@reports_errors
def remove_member(ctx: typer.Context, group: GroupArgument, user: UserArgument) -> None:
    """Take a user out of a group."""
    _change_members(ctx, ZhikuClient.remove_group_member, group, user, "is no longer in")


def _change_members(
    ctx: typer.Context, change: Callable[[ZhikuClient, str, str], None], group: str, user: str, now: str
) -> None:
    """Add a user (email or id) to a group or remove them with ``change``, then say where they ``now`` are."""
    call_and_print(
        ctx,
        lambda client: change(client, group, client.resolve_user(user)),
        lambda _: f"{escape(user)} {now} [bold]{escape(group)}[/].",
    )
