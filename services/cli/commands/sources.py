"""``zhiku sources add|list|sync|remove``: a knowledge base's sources and their sync reports."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from services.cli import render
from services.cli.context import current, fail, reports_errors

app = typer.Typer(
    help="Sync a knowledge base from a directory, an S3 bucket or a web site.", no_args_is_help=True
)

SYNC_POLL_S = 0.5


@app.command("add")
@reports_errors
def add(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="knowledge base", show_default=False)],
    name: Annotated[str, typer.Argument(help="the source's name", show_default=False)],
    directory: Annotated[str, typer.Option("--dir", help="directory under the server's sources root")] = "",
    bucket: Annotated[str, typer.Option("--s3-bucket", help="S3 bucket")] = "",
    prefix: Annotated[str, typer.Option("--prefix", help="S3: only keys starting with this")] = "",
    endpoint: Annotated[str, typer.Option("--endpoint", help="S3: endpoint URL (MinIO...)")] = "",
    region: Annotated[str, typer.Option("--region", help="S3: region")] = "",
    access_key_id: Annotated[str, typer.Option("--access-key-id", envvar="ZHIKU_S3_ACCESS_KEY_ID")] = "",
    secret_access_key: Annotated[
        str, typer.Option("--secret-access-key", envvar="ZHIKU_S3_SECRET_ACCESS_KEY", help="stored encrypted")
    ] = "",
    url: Annotated[str, typer.Option("--url", help="web: start URL to crawl")] = "",
    sitemap: Annotated[str, typer.Option("--sitemap", help="web: sitemap URL")] = "",
    depth: Annotated[int, typer.Option("--depth", min=0, max=10, help="web: link depth (0: default)")] = 0,
    max_pages: Annotated[int, typer.Option("--max-pages", min=0, help="web: most pages (0: default)")] = 0,
    every: Annotated[
        int, typer.Option("--every", min=0, help="sync every this many seconds (0: on demand)")
    ] = 0,
) -> None:
    """Add a source (exactly one of --dir, --s3-bucket, --url, --sitemap); sync it with `sync`."""
    state = current(ctx)
    kinds = [
        kind for kind, given in (("directory", directory), ("s3", bucket), ("web", url or sitemap)) if given
    ]
    if len(kinds) != 1 or (url and sitemap):
        raise fail(state, "give exactly one of --dir, --s3-bucket, --url or --sitemap", code=2)
    body: dict[str, Any] = {"name": name, "kind": kinds[0], "interval_s": every}
    body.update({"path": directory} if directory else {})
    if bucket:
        body.update(bucket=bucket, prefix=prefix, endpoint_url=endpoint, region=region)
        body.update(access_key_id=access_key_id, secret_access_key=secret_access_key)
    if kinds[0] == "web":
        body.update(start_url=url, sitemap_url=sitemap, max_depth=depth, max_pages=max_pages)
    with state.client() as client:
        source = client.create_source(kb, body)
    state.console.print(sources_table(kb, [source]))


@app.command("list")
@reports_errors
def list_sources(ctx: typer.Context, kb: Annotated[str, typer.Argument(help="knowledge base")]) -> None:
    """The knowledge base's sources and their last syncs."""
    state = current(ctx)
    with state.client() as client:
        sources = client.list_sources(kb)
    if not sources:
        state.console.print(f"No sources in {escape(kb)}.")
        return
    state.console.print(sources_table(kb, sources))


@app.command("sync")
@reports_errors
def sync(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="knowledge base")],
    name: Annotated[str, typer.Argument(help="source")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the report")] = True,
) -> None:
    """Sync now and print the report: added, updated, removed and failed files."""
    state = current(ctx)
    with state.client() as client:
        report = client.sync_source(kb, name)
        while wait and report["state"] in ("queued", "running"):
            time.sleep(SYNC_POLL_S)
            report = client.sync_report(kb, name, report["id"])
    for line in report_lines(report):
        state.console.print(line)
    if report["state"] == "failed":
        raise typer.Exit(1)


@app.command("remove")
@reports_errors
def remove(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="knowledge base")],
    name: Annotated[str, typer.Argument(help="source")],
) -> None:
    """Forget a source; the files it synced stay in the knowledge base."""
    state = current(ctx)
    with state.client() as client:
        client.delete_source(kb, name)
    state.console.print(f"Removed source [bold]{escape(name)}[/] from {escape(kb)}.")


def _where(source: dict[str, Any]) -> str:
    if source["kind"] == "directory":
        return str(source["path"])
    if source["kind"] == "s3":
        return f"s3://{source['bucket']}/{source['prefix']}" + (
            " (keys set)" if source["credentials_set"] else ""
        )
    return str(source["start_url"] or source["sitemap_url"])


def sources_table(kb: str, sources: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Sources of {kb}", title_justify="left")
    for column in ("name", "kind", "from", "every", "last sync", "result"):
        table.add_column(column)
    for source in sources:
        last = source.get("last_sync") or {}
        result = (
            f"+{len(last['added'])} ~{len(last['updated'])} -{len(last['removed'])} !{len(last['failed'])}"
            if last
            else ""
        )
        table.add_row(
            Text(source["name"]),
            source["kind"],
            Text(_where(source)),
            f"{source['interval_s']} s" if source["interval_s"] else "on demand",
            render.state_text(last["state"]) if last else Text("never"),
            result,
        )
    return table


def report_lines(report: dict[str, Any]) -> list[Text]:
    lines = [Text.assemble("sync ", (report["id"], "dim"), " ", render.state_text(report["state"]))]
    if report.get("error"):
        lines.append(Text(f"error: {report['error']}", style="red"))
    for label, names in (
        ("added", report["added"]),
        ("updated", report["updated"]),
        ("removed", report["removed"]),
    ):
        lines.extend(Text(f"{label:8} {name}") for name in names)
    lines.extend(
        Text(f"failed   {failure['item']}: {failure['reason']}", style="red") for failure in report["failed"]
    )
    lines.append(Text(f"unchanged {report['unchanged']}", style="dim"))
    return lines
