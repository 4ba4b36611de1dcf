"""``/mcp``: the MCP server (the official ``mcp`` SDK) on the gateway, streamable HTTP transport.

The endpoint is a plain route of the gateway's own router, so every gateway middleware applies
to it as to any route: request ids, metrics, the access middleware (no key, or an unknown one,
is a 401 before MCP sees the request; an open gateway stays open) and the body limit. The
endpoint records the caller that middleware established on the request, and each tool call
runs as that caller (see ``calls.py``).

The transport is stateless with JSON responses: every POST is answered on its own, nothing is
kept between requests, so any gateway replica can answer any request (no sticky sessions) and
nothing outlives a revoked key. The SDK's session manager still needs its task group running:
:func:`running_mcp` starts a fresh one in each gateway lifespan (a manager runs only once).
Host and Origin checks (the SDK's DNS-rebinding guard, which would refuse any Host but
localhost) are left to the gateway as for its other routes: keys, and CORS for browsers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import ValidationError
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from services.gateway.authz import current_caller
from services.gateway.errors import error_response
from services.gateway.mcp_server import tools
from services.gateway.mcp_server.calls import CALLER_STATE_KEY, validation_message
from services.gateway.mcp_server.metrics import ToolCallMetrics

MCP_PATH = "/mcp"

INSTRUCTIONS = """\
Zhiku's knowledge bases: call list_knowledge_bases to see which you may use, search to find
passages, ask for an answer with numbered citations, and get_file_content to read a cited file.
Scores are similarities in [0, 1], higher is better."""

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


class ZhikuMcpServer(MCPServer):
    """The SDK's server, with arguments that fail validation reported as the HTTP API reports
    them ("top_k: Input should be less than or equal to 100") instead of pydantic's dump."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            if isinstance(error.__cause__, ValidationError):
                raise ToolError(
                    f"invalid arguments for {name}: {validation_message(error.__cause__)}"
                ) from error.__cause__
            raise


def build_mcp_server() -> MCPServer:
    """The MCP server with Zhiku's tools (their descriptions are their docstrings)."""
    # The SDK's constructor calls logging.basicConfig (a Rich handler on the root logger when
    # none is set yet): the process's logging is services.common.logging's, so undo that.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server = ZhikuMcpServer(name="zhiku", title="Zhiku knowledge bases", instructions=INSTRUCTIONS)
    root.handlers[:] = handlers
    root.setLevel(level)
    for tool in tools.TOOLS:
        server.add_tool(tool, annotations=READ_ONLY, structured_output=True)
    server.middleware.append(ToolCallMetrics(frozenset(tool.__name__ for tool in tools.TOOLS)))
    return server


class McpRoute(Route):
    """A plain Starlette route that, like FastAPI's, names itself in the scope: the metrics
    middleware labels requests by ``scope["route"].path``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class McpEndpoint:
    """ASGI endpoint of ``/mcp``: hands the request to the running session manager."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager: StreamableHTTPSessionManager | None = getattr(scope["app"].state, "mcp_sessions", None)
        if manager is None:
            refusal = error_response(503, "the gateway is not started", "not_started", path=scope["path"])
            await refusal(scope, receive, send)
            return
        # The access middleware's caller (None: open gateway), for the tools to act as.
        scope.setdefault("state", {})[CALLER_STATE_KEY] = current_caller()
        await manager.handle_request(scope, receive, send)


def mount_mcp(app: FastAPI) -> None:
    """Add ``/mcp`` to the app's routes (before the web UI, like every API route)."""
    app.state.mcp_server = build_mcp_server()
    app.state.mcp_sessions = None
    app.router.routes.append(McpRoute(MCP_PATH, endpoint=McpEndpoint(), name="mcp"))


@asynccontextmanager
async def running_mcp(app: FastAPI) -> AsyncIterator[None]:
    """Run a fresh session manager for the lifespan of the app.

    The manager's task group lives in a task of its own: an anyio task group must be left in
    the task that entered it, and a lifespan is not always ended by the task that began it
    (test fixtures start and stop apps from different tasks)."""
    server: MCPServer = app.state.mcp_server
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    started, stopping = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        async with manager.run():
            started.set()
            await stopping.wait()

    serving = asyncio.create_task(serve(), name="mcp-session-manager")
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        ready.cancel()
        await serving  # raises why the manager did not start
    app.state.mcp_sessions = manager
    try:
        yield
    finally:
        app.state.mcp_sessions = None
        stopping.set()
        await serving
