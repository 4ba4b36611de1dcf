"""``zhiku up``: the whole stack on this machine, exactly what ``make run`` starts.

It runs :func:`launcher.stack.main` in this process with the same options, so Ctrl-C reaches
the launcher's own handler, which stops every child process group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def up(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="catalog, blobs, vectors [default: $ZHIKU_DATA_DIR or ./data]"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="gateway port, kept with --free-ports [default: $ZHIKU_GATEWAY_PORT or 8000]"
        ),
    ] = None,
    free_ports: Annotated[
        bool, typer.Option("--free-ports", help="pick free ports for everything but an explicit --port")
    ] = False,
    worker_concurrency: Annotated[int | None, typer.Option("--worker-concurrency", min=1)] = None,
    ready_timeout: Annotated[float | None, typer.Option("--ready-timeout", help="seconds")] = None,
) -> None:
    """Start every service, the worker and the gateway (same as `make run`); a service that dies
    is restarted with back-off; Ctrl-C stops all."""
    from launcher import stack  # imports grpc: only for this command

    argv: list[str] = []
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if port is not None:
        argv += ["--port", str(port)]
    if free_ports:
        argv.append("--free-ports")
    if worker_concurrency is not None:
        argv += ["--worker-concurrency", str(worker_concurrency)]
    if ready_timeout is not None:
        argv += ["--ready-timeout", str(ready_timeout)]
    raise typer.Exit(stack.main(argv))
