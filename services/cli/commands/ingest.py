"""``zhiku ingest PATH... --kb NAME``: upload files and directories, follow every job to its end.

Each file is uploaded on its own request (one bad file is reported, the others go on), then
its job is followed through the gateway's event stream (polling when that route is missing)
with a progress bar per file. The command exits non-zero when any file failed, after printing
each failure's error, so scripts can trust its exit status.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from services.cli.client import ApiError, Job, UploadOptions, ZhikuClient
from services.cli.context import EXIT_FAILED, CliState, current, fail, reports_errors

# Jobs followed at once; each holds one streaming connection to the gateway.
MAX_FOLLOWED = 8


class Splitter(StrEnum):
    recursive = "recursive"
    markdown = "markdown"


@dataclass
class Outcome:
    """How one file ended: a job state (or ``unchanged``), chunks and the error, if any."""

    name: str
    state: str
    chunks: int = 0
    error: str | None = None


def collect_files(paths: list[Path]) -> list[Path]:
    """Named files as given; directories walked recursively, skipping hidden entries."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden:
                    found.append(child)
        else:
            found.append(path)
    return found


def duplicate_names(files: list[Path]) -> dict[str, list[Path]]:
    """Files that would overwrite each other: the gateway keys files by base name."""
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)
    return {name: paths for name, paths in by_name.items() if len(paths) > 1}


class JobBoard:
    """The progress bars: one row per file, updated from the threads following the jobs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.lock = threading.Lock()

    def add(self, name: str) -> TaskID:
        return self.progress.add_task(name, total=1.0, stage="uploading")

    def show(self, task: TaskID, job: Job) -> None:
        state = job.get("state", "")
        stage = job.get("stage") or state
        done = state in ("succeeded", "failed", "cancelled")
        label = f"{stage} ({job.get('chunks', 0)} chunks)" if state == "succeeded" else stage
        progress = 1.0 if done else float(job.get("progress") or 0.0)
        with self.lock:
            self.progress.update(task, completed=progress, stage=label)

    def finish(self, task: TaskID, label: str) -> None:
        with self.lock:
            self.progress.update(task, completed=1.0, stage=label)


def follow(client: ZhikuClient, board: JobBoard, task: TaskID, name: str, job_id: str) -> Outcome:
    last: Job = {}
    for job in client.watch_job(job_id):
        board.show(task, job)
        last = job
    return Outcome(name, last.get("state", "failed"), int(last.get("chunks") or 0), last.get("error"))


@reports_errors
def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(exists=True, readable=True, metavar="PATH", help="files or directories (recursive)"),
    ],
    kb: Annotated[str, typer.Option("--kb", help="knowledge base to add the files to", show_default=False)],
    override: Annotated[
        bool | None,
        typer.Option("--override/--no-override", help="re-index even when the content is unchanged"),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", min=1, help="characters per chunk")
    ] = None,
    chunk_overlap: Annotated[int | None, typer.Option("--chunk-overlap", min=0)] = None,
    splitter: Annotated[Splitter | None, typer.Option("--splitter", help="how to split text")] = None,
    title_enhance: Annotated[
        bool | None, typer.Option("--title-enhance/--no-title-enhance", help="prefix chunks with titles")
    ] = None,
    parent_child: Annotated[
        bool | None,
        typer.Option(
            "--parent-child/--no-parent-child",
            help="embed small child chunks, answer from their parent section (default: the KB's setting)",
        ),
    ] = None,
    parent_chunk_size: Annotated[
        int | None, typer.Option("--parent-chunk-size", min=1, help="parent sections' size bound")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the jobs to their end")] = True,
    reader: Annotated[
        list[str] | None,
        typer.Option("--reader", help="only this person may retrieve the files (email or id; repeatable)"),
    ] = None,
    reader_group: Annotated[
        list[str] | None, typer.Option("--reader-group", help="and this group (repeatable)")
    ] = None,
) -> None:
    """Upload files into a knowledge base and show each one's ingestion progress."""
    state = current(ctx)
    files = collect_files(paths)
    if not files:
        raise fail(state, "no files found under the given paths")
    clashes = duplicate_names(files)
    if clashes:
        listed = "; ".join(f"{name}: {', '.join(map(str, found))}" for name, found in clashes.items())
        raise fail(state, f"files share a name and would replace each other in {kb!r}: {listed}")
    options = UploadOptions(
        override=override,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        splitter=splitter.value if splitter else None,
        title_enhance=title_enhance,
        parent_child=parent_child,
        parent_chunk_size=parent_chunk_size,
    )
    outcomes: list[Outcome] = []
    with state.client() as client:
        client.get_knowledge_base(kb)  # a missing knowledge base stops us before any upload
        if reader or reader_group:
            readers = [client.resolve_user(who) for who in reader or []]
            options = replace(options, access={"users": readers, "groups": list(reader_group or [])})
        progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[stage]}", markup=False),
            TimeElapsedColumn(),
            console=state.console,
        )
        board = JobBoard(progress)
        with progress, ThreadPoolExecutor(max_workers=MAX_FOLLOWED) as pool:
            followed = []
            for path in files:
                task = board.add(path.name)
                try:
                    job = client.upload_file(kb, path, path.name, options)
                except ApiError as error:  # this file only: too large, bad name, ...
                    board.finish(task, "rejected")
                    outcomes.append(
                        Outcome(path.name, "failed", error=f"{error.message} (HTTP {error.status})")
                    )
                    continue
                if job.get("unchanged"):
                    board.finish(task, "unchanged")
                    outcomes.append(Outcome(path.name, "unchanged"))
                elif not wait:
                    board.finish(task, f"queued as job {job['id']}")
                    outcomes.append(Outcome(path.name, job.get("state", "queued")))
                else:
                    followed.append(pool.submit(follow, client, board, task, path.name, job["id"]))
            outcomes.extend(future.result() for future in followed)
    report(state, outcomes)


def report(state: CliState, outcomes: list[Outcome]) -> None:
    """Each failure's error on stderr, one summary line, and the exit status."""
    failed = [o for o in outcomes if o.state in ("failed", "cancelled")]
    for outcome in failed:
        state.errors.print(
            f"[red]✗ {escape(outcome.name)}[/]: {outcome.state}: {escape(outcome.error or 'no error given')}"
        )
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    chunks = sum(o.chunks for o in outcomes)
    summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    state.console.print(f"{len(outcomes)} files: {summary}; {chunks} chunks indexed.")
    if failed:
        raise typer.Exit(EXIT_FAILED)
