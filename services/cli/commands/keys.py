"""``zhiku keys create|list|revoke``: API keys (needs an admin key unless the gateway is open)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from services.cli import render
from services.cli.context import current, reports_errors

app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)


@app.command("create")
@reports_errors
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="who or what the key is for", show_default=False)],
    kb: Annotated[
        list[str] | None, typer.Option("--kb", help="limit the key to this knowledge base (repeatable)")
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", min=1, help="requests per minute (default: unlimited)")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="may manage keys")] = False,
) -> None:
    """Create a key; its plaintext is printed once and cannot be shown again."""
    state = current(ctx)
    with state.client() as client:
        key = client.create_key(name, kb or None, rate_limit, admin)
    state.console.print(render.keys_table([key]))
    state.console.print("Key (shown only now, store it safely):")
    state.console.print(Text(key.get("key", "")), soft_wrap=True)


@app.command("list")
@reports_errors
def list_keys(ctx: typer.Context) -> None:
    """List keys (never their plaintext)."""
    state = current(ctx)
    with state.client() as client:
        keys = client.list_keys()
    if not keys:
        state.console.print("No API keys.")
        return
    state.console.print(render.keys_table(keys))


@app.command("revoke")
@reports_errors
def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="key id from `zhiku keys list`")]
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    state = current(ctx)
    with state.client() as client:
        client.revoke_key(key_id)
    state.console.print(f"Revoked key [bold]{escape(key_id)}[/].")
