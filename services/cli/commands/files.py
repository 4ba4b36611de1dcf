"""``zhiku files access KB FILE``: who may retrieve one file (its document access list)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from services.cli.client import ClientError
from services.cli.context import current, fail, reports_errors

app = typer.Typer(help="A knowledge base's files: their access lists.", no_args_is_help=True)


@app.command("access")
@reports_errors
def access(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="knowledge base name", show_default=False)],
    file: Annotated[str, typer.Argument(help="file name in it", show_default=False)],
    user: Annotated[
        list[str] | None,
        typer.Option("--user", "-u", help="a person who may read it (email or id; repeatable)"),
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="a group who may (repeatable)")
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="clear the list: everyone who may view the knowledge base")
    ] = False,
) -> None:
    """Show a file's access list, or replace it with the given --user/--group (--open clears it).

    The change reaches search and chat at once; the file is not re-embedded.
    """
    state = current(ctx)
    if open_ and (user or group):
        raise fail(state, "--open clears the list: give it alone, without --user or --group")
    with state.client() as client:
        if user or group or open_:
            ids = [client.resolve_user(who) for who in user or []]
            listed = client.set_file_access(kb, file, ids, list(group or []))
        else:
            listed = client.file_access(kb, file)
        emails: dict[str, str] = {}
        if listed.get("users"):
            try:
                emails = {str(u.get("id")): str(u.get("email", "")) for u in client.list_users()}
            except ClientError:  # names are a courtesy: non-admins may not list users, they see ids
                emails = {}
    users = [emails.get(uid) or uid for uid in listed.get("users") or []]
    groups = list(listed.get("groups") or [])
    if not users and not groups:
        state.console.print(f"{escape(file)}: everyone who may view {escape(kb)}.")
        return
    state.console.print(f"{escape(file)} in {escape(kb)} may be read by:")
    state.console.print(f"  users:  {escape(', '.join(users) or '-')}")
    state.console.print(f"  groups: {escape(', '.join(groups) or '-')}")
