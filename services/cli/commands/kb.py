"""``zhiku kb create|list|files|delete|migrate|share|unshare|members``: knowledge bases, who uses them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from services.cli import render
from services.cli.client import Job
from services.cli.context import current, fail, reports_errors

app = typer.Typer(help="Create, list, inspect, delete and share knowledge bases.", no_args_is_help=True)

KbArgument = Annotated[str, typer.Argument(help="knowledge base name", show_default=False)]


@app.command("create")
@reports_errors
def create(
    ctx: typer.Context,
    name: KbArgument,
    description: Annotated[str, typer.Option("--description", "-d", help="what it holds")] = "",
    parent_child: Annotated[
        bool,
        typer.Option(
            "--parent-child", help="uploads default to parent-child chunks (answers read the parent)"
        ),
    ] = False,
    parent_chunk_size: Annotated[
        int, typer.Option("--parent-chunk-size", min=0, help="parent sections' size bound (0: 1500)")
    ] = 0,
) -> None:
    """Create an empty knowledge base (fails if the name is taken)."""
    state = current(ctx)
    with state.client() as client:
        kb = client.create_knowledge_base(name, description, parent_child, parent_chunk_size)
    state.console.print(f"Created knowledge base [bold]{escape(kb.get('name', name))}[/].")


@app.command("list")
@reports_errors
def list_knowledge_bases(ctx: typer.Context) -> None:
    """List knowledge bases with their file and chunk counts."""
    state = current(ctx)
    with state.client() as client:
        kbs = client.list_knowledge_bases()
    if not kbs:
        state.console.print("No knowledge bases yet: `zhiku kb create NAME`.")
        return
    state.console.print(render.knowledge_bases_table(kbs))


@app.command("files")
@reports_errors
def files(ctx: typer.Context, name: KbArgument) -> None:
    """List a knowledge base's files: size, chunks, ingestion state and error."""
    state = current(ctx)
    with state.client() as client:
        entries = client.list_files(name)
    state.console.print(render.files_table(name, entries))


@app.command("delete")
@reports_errors
def delete(
    ctx: typer.Context,
    name: KbArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a knowledge base with all its files, vectors and jobs (asks first)."""
    state = current(ctx)
    with state.client() as client:
        if not yes:
            kb = client.get_knowledge_base(name)  # a typo fails here, before the question
            typer.confirm(
                f"Delete knowledge base {name!r} with its {kb.get('file_count', 0)} files "
                f"and {kb.get('chunk_count', 0)} chunks?",
                abort=True,
            )
        client.delete_knowledge_base(name)
    state.console.print(f"Deleted knowledge base [bold]{escape(name)}[/].")


Role = Annotated[str, typer.Option("--role", "-r", help="viewer, editor or owner")]
UserOption = Annotated[str | None, typer.Option("--user", "-u", help="a person's email (or user id)")]
GroupOption = Annotated[str | None, typer.Option("--group", "-g", help="a group's name")]
ROLES = ("viewer", "editor", "owner")


def _member(ctx: typer.Context, user: str | None, group: str | None) -> tuple[str, str]:
    """The (kind, who) of ``--user`` or ``--group``: exactly one of them."""
    if (user is None) == (group is None):
        raise fail(current(ctx), "give exactly one of --user EMAIL or --group NAME")
    return ("user", user) if user is not None else ("group", str(group))


@app.command("share")
@reports_errors
def share(
    ctx: typer.Context,
    name: KbArgument,
    user: UserOption = None,
    group: GroupOption = None,
    role: Role = "viewer",
) -> None:
    """Give a person or a group a role on a knowledge base (or change the role they have)."""
    state = current(ctx)
    kind, who = _member(ctx, user, group)
    if role not in ROLES:
        raise fail(state, f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    with state.client() as client:
        member_id = client.resolve_user(who) if kind == "user" else who
        client.share(name, kind, member_id, role)
    state.console.print(f"{escape(who)} is now [bold]{role}[/] of [bold]{escape(name)}[/].")


@app.command("unshare")
@reports_errors
def unshare(ctx: typer.Context, name: KbArgument, user: UserOption = None, group: GroupOption = None) -> None:
    """Take a person's or a group's role on a knowledge base away."""
    state = current(ctx)
    kind, who = _member(ctx, user, group)
    with state.client() as client:
        member_id = client.resolve_user(who) if kind == "user" else who
        client.unshare(name, kind, member_id)
    state.console.print(f"{escape(who)} no longer has a role on [bold]{escape(name)}[/].")


@app.command("members")
@reports_errors
def members(ctx: typer.Context, name: KbArgument) -> None:
    """Who holds which role on a knowledge base (people and groups)."""
    state = current(ctx)
    with state.client() as client:
        listed = client.list_members(name)
    if not listed:
        state.console.print(f"No members on {escape(name)}: only admins see it.")
        return
    state.console.print(render.members_table(name, listed))


@app.command("migrate")
@reports_errors
def migrate(
    ctx: typer.Context,
    name: KbArgument,
    embed_model: Annotated[
        str, typer.Argument(help="a model the embed service serves (e5, use, a TEI URL or model id)")
    ],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="follow the migration until it ends")] = False,
) -> None:
    """Re-embed every file with another embedding model; searches keep answering meanwhile
    and switch to the new model when it is done (`zhiku jobs cancel ID` keeps the old one)."""
    state = current(ctx)
    with state.client() as client:
        job = client.migrate_knowledge_base(name, embed_model)
        state.console.print(
            f"Migrating [bold]{escape(name)}[/] to {escape(job.get('embed_model') or embed_model)}: "
            f"job {escape(job.get('id', ''))}."
        )
        if not wait:
            return
        last: Job = job
        with state.console.status("re-embedding…") as status:
            for update in client.watch_job(job["id"]):
                status.update(f"{update.get('stage', '')} {100 * float(update.get('progress') or 0):.0f}%")
                last = update
    state.console.print(render.jobs_table(f"Migration of {name}", [last]))
    if last.get("state") != "succeeded":
        raise typer.Exit(1)
