"""The ``zhiku`` command: global options and the command tree (console script ``zhiku``).

The CLI is a client of the public HTTP API, not a service: it has no Settings class and reads
only ``ZHIKU_URL`` and ``ZHIKU_API_KEY`` (through its options) and the sign-in ``zhiku login``
stored in its own config file (services/cli/credentials.py), so a remote gateway is one flag
away and the services' configuration is never touched.
"""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.client import DEFAULT_URL
from services.cli.commands import (
    agent,
    ask,
    auth,
    files,
    groups,
    ingest,
    jobs,
    kb,
    keys,
    search,
    sources,
    up,
    users,
)
from services.cli.context import CliState

app = typer.Typer(
    name="zhiku",
    help="Zhiku 知库: knowledge-base question answering from the terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", envvar="ZHIKU_URL", help="gateway base URL")] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="ZHIKU_API_KEY", help="Bearer key, when the gateway needs one"),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="seconds to wait for one HTTP answer")
    ] = 120.0,
) -> None:
    """Talk to a Zhiku gateway (local by default), or start one with `zhiku up`."""
    ctx.obj = CliState(url=url, api_key=api_key or None, timeout_s=timeout)


app.command("up")(up.up)
app.add_typer(kb.app, name="kb")
app.command("ingest")(ingest.ingest)
app.command("ask")(ask.ask)
app.command("agent")(agent.agent)
app.command("search")(search.search)
app.add_typer(jobs.app, name="jobs")
app.add_typer(keys.app, name="keys")
app.add_typer(sources.app, name="sources")
app.command("login")(auth.login)
app.command("logout")(auth.logout)
app.command("whoami")(auth.whoami)
app.add_typer(users.app, name="users")
app.add_typer(groups.app, name="groups")
app.add_typer(files.app, name="files")

if __name__ == "__main__":
    app()
