"""What every MCP tool call shares: on whose behalf it runs and how its failures read.

The caller is the one the access middleware established for the HTTP request that carried the
call (its Bearer key, or the open gateway), recorded on that request by the ``/mcp`` endpoint.
The tool body runs :func:`~services.gateway.authz.acting_as` that caller, so every knowledge
base it names is checked by the gRPC guard (``kb_guard.py``) exactly as for the HTTP routes: a
forbidden name fails as an unknown one. The MCP SDK may run a call in a task that does not
share the request's context (its sessions outlive requests), hence the explicit hand-over.

Failures become MCP tool errors (``isError`` results) with the message the HTTP API would give,
so a client sees "knowledge base 'x' does not exist" rather than a broken session.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError
from starlette.requests import Request

from services.gateway.access import Principal
from services.gateway.authz import Caller, acting_as
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError, rpc_error_body
from services.gateway.mcp_server.metrics import Outcome, mark_outcome

log = logging.getLogger("zhiku.gateway.mcp")

# Where the /mcp endpoint records the request's caller (in the ASGI scope's state).
CALLER_STATE_KEY = "zhiku_mcp_caller"

T = TypeVar("T")


@dataclass(frozen=True)
class ToolEnv:
    """What a tool body needs: the gateway's service clients and settings."""

    clients: ServiceClients
    settings: GatewaySettings


def _request(ctx: Context) -> Request:
    request = ctx.request_context.request
    if not isinstance(request, Request):
        raise ToolError("this MCP server answers over HTTP only")
    return request


def caller_of(request: Request) -> Caller:
    """The caller recorded for the request; none recorded fails closed."""
    recorded: dict[str, Any] = request.scope.get("state") or {}
    if CALLER_STATE_KEY not in recorded:
        raise ToolError("the request's caller is unknown; refusing")
    caller = recorded[CALLER_STATE_KEY]
    if caller is not None and not isinstance(caller, Principal):
        raise ToolError("the request's caller is unknown; refusing")
    return caller


def env_of(request: Request) -> ToolEnv:
    state = request.app.state
    if getattr(state, "clients", None) is None:
        raise ToolError("the gateway is not started")
    return ToolEnv(clients=state.clients, settings=state.settings)


def validation_message(error: ValidationError) -> str:
    """pydantic's complaints, one per field, as the HTTP API words them."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "arguments"
        parts.append(f"{where}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _translate(error: Exception) -> tuple[Outcome, str]:
    if isinstance(error, grpc.RpcError):
        status, body = rpc_error_body(error)
        return ("server_error" if status >= 500 else "client_error"), body["error"]["message"]
    if isinstance(error, HttpApiError):
        return ("server_error" if error.status >= 500 else "client_error"), error.message
    if isinstance(error, ValidationError):
        return "client_error", validation_message(error)
    if isinstance(error, ToolError):
        return "client_error", str(error)
    return "server_error", "internal error"


async def run_tool(tool: str, ctx: Context, body: Callable[[ToolEnv], Awaitable[T]]) -> T:
    """Run ``body`` for the request's caller; a failure becomes a tool error with a clear message
    (and its kind is marked for the tool-call metrics)."""
    try:
        request = _request(ctx)
        caller = caller_of(request)
        env = env_of(request)
        with acting_as(caller):
            return await body(env)
    except Exception as error:
        outcome, message = _translate(error)
        mark_outcome(outcome)
        if outcome == "server_error" and not isinstance(error, grpc.RpcError | HttpApiError):
            log.exception("MCP tool %s failed unexpectedly", tool)  # the client learns no internals
        raise ToolError(message) from error
