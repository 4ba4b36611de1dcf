"""Per-invocation state (gateway URL, key, consoles) and the one place errors become exit codes.

Every command runs under :func:`reports_errors`, so a failure the user can act on (gateway
down, key refused, knowledge base missing) is one red line on stderr and a distinct exit code,
never a traceback. The table below is the only mapping from failures to exit codes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.markup import escape

from services.cli import credentials
from services.cli.client import DEFAULT_URL, ApiError, ClientError, GatewayUnreachable, ZhikuClient

EXIT_FAILED = 1  # the gateway refused the request, or some work (a file's ingestion) failed
EXIT_UNREACHABLE = 3  # no answer: gateway down, wrong --url, timeout
EXIT_AUTH = 4  # 401 or 403: missing, unknown or insufficient API key
EXIT_NOT_FOUND = 5  # 404: no such knowledge base, file, job or key
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_BY_STATUS = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND}


@dataclass
class CliState:
    """What the global options decided; commands read it with :func:`current`."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = 120.0
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    errors: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))

    def stored(self) -> credentials.Credentials | None:
        """What ``zhiku login`` stored for this gateway (unreadable file: one clear error)."""
        try:
            return credentials.load(self.url)
        except ValueError as error:
            raise ClientError(str(error)) from None

    def client(self) -> ZhikuClient:
        """A client with ``--api-key`` when given, else this gateway's stored sign-in."""
        if self.api_key:
            return ZhikuClient(self.url, self.api_key, self.timeout_s)
        stored = self.stored()
        if stored is None:
            return ZhikuClient(self.url, None, self.timeout_s)
        return ZhikuClient(
            self.url, stored.api_key, self.timeout_s, session=stored.session, csrf_token=stored.csrf_token
        )

    def signed_in(self) -> bool:
        return not self.api_key and self.stored() is not None


def current(ctx: typer.Context) -> CliState:
    """The state the root callback stored on this invocation's context.

    Every command takes ``ctx: typer.Context`` (Typer's way to reach shared state), and
    :func:`reports_errors` relies on it being passed by that name.
    """
    return ctx.ensure_object(CliState)  # defaults when a command app runs without the root


T = TypeVar("T")


def call_and_print(
    ctx: typer.Context, call: Callable[[ZhikuClient], T], shown: Callable[[T], RenderableType]
) -> None:
    """Make a command's gateway calls on one client, then print what ``shown`` makes of their
    answer. The admin commands (users, groups) are all this one shape; the client is closed
    before anything prints, so output never interleaves with a request still in flight."""
    state = current(ctx)
    with state.client() as client:
        answer = call(client)
    state.console.print(shown(answer))


def fail(state: CliState, message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``Error: message`` to stderr; the caller raises the returned exit."""
    state.errors.print(f"[bold red]Error:[/] {escape(message)}")
    return typer.Exit(code)


def explain(error: ClientError, state: CliState) -> tuple[str, int]:
    """The line to print and the exit code for a client error."""
    if isinstance(error, GatewayUnreachable):
        return f"{error} (is the stack running? `zhiku up`, or pass --url)", EXIT_UNREACHABLE
    if isinstance(error, ApiError):
        code = EXIT_BY_STATUS.get(error.status, EXIT_FAILED)
        if error.status == 401 and state.signed_in():
            return (
                f"the gateway at {state.url} no longer accepts the stored sign-in ({error.message}): "
                "run `zhiku login` again",
                code,
            )
        if error.status == 401 and not state.api_key:
            return (
                f"the gateway at {state.url} needs an API key or a sign-in ({error.message}): "
                "run `zhiku login`, or pass --api-key or set ZHIKU_API_KEY",
                code,
            )
        if error.status == 401:
            return f"the gateway at {state.url} refused the API key: {error.message}", code
        return f"{error.message} (HTTP {error.status})", code
    return str(error), EXIT_FAILED


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so client errors and Ctrl-C end it with a message and an exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = kwargs.get("ctx")
        if not hasattr(ctx, "find_object"):  # Typer passes its click context, by this name
            raise TypeError(f"{command.__name__} must take ctx: typer.Context")
        state = current(ctx)  # type: ignore[arg-type]  # a typer.Context, as checked just above
        try:
            return command(*args, **kwargs)
        except ClientError as error:
            message, code = explain(error, state)
            state.errors.print(f"[bold red]Error:[/] {escape(message)}")
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            state.errors.print("[yellow]Interrupted.[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return run
