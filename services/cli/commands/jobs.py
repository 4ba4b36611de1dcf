"""``zhiku jobs --kb NAME``, ``zhiku jobs show ID``, ``zhiku jobs cancel ID``: ingestion jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli import render
from services.cli.client import Job
from services.cli.context import current, fail, reports_errors

app = typer.Typer(
    help="Ingestion jobs: a knowledge base's jobs (--kb), one job (show), or cancel one.",
    invoke_without_command=True,
)

JobArgument = Annotated[str, typer.Argument(help="job id (from `zhiku ingest` or `zhiku jobs`)")]


@app.callback()
@reports_errors
def jobs(
    ctx: typer.Context,
    kb: Annotated[
        str | None, typer.Option("--kb", help="list this knowledge base's jobs, newest first")
    ] = None,
) -> None:
    """List a knowledge base's jobs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    state = current(ctx)
    if kb is None:
        raise fail(state, "name a knowledge base with --kb NAME, or use `zhiku jobs show ID`", code=2)
    with state.client() as client:
        found = client.list_jobs(kb)
    if not found:
        state.console.print(f"No jobs in {kb!r}.", markup=False)
        return
    state.console.print(render.jobs_table(f"Jobs in {kb}", found))


@app.command("show")
@reports_errors
def show(
    ctx: typer.Context,
    job_id: JobArgument,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow it until it ends")] = False,
) -> None:
    """One job's state, stage, progress, chunks and error."""
    state = current(ctx)
    with state.client() as client:
        if watch:
            last: Job = {}
            with state.console.status("following job…") as status:
                for job in client.watch_job(job_id):
                    status.update(f"{job.get('stage', '')} {100 * float(job.get('progress') or 0):.0f}%")
                    last = job
            job = last
        else:
            job = client.get_job(job_id)
    state.console.print(render.jobs_table(f"Job {job_id}", [job]))
    if watch and job.get("state") in ("failed", "cancelled"):
        raise typer.Exit(1)


@app.command("cancel")
@reports_errors
def cancel(ctx: typer.Context, job_id: JobArgument) -> None:
    """Cancel a queued or running job."""
    state = current(ctx)
    with state.client() as client:
        job = client.cancel_job(job_id)
    state.console.print(render.jobs_table(f"Job {job_id}", [job]))
