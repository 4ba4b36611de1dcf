"""``zhiku_mcp_tool_calls_total{tool, outcome}``: every ``tools/call`` the MCP server answers.

Counted by an MCP server middleware (it wraps argument validation too, so a call refused for
bad arguments is counted like one refused by the tool). Outcomes: ``ok``; ``client_error``
(bad arguments, an unknown or forbidden knowledge base or file, an unknown tool);
``server_error`` (a service failed or timed out). Only the tool body knows which of the last
two a failure is: :func:`mark_outcome` tells the middleware through a holder it put in the
context (the SDK may run the tool in a task of its own, which copies the context, holder
included). Tool names outside Zhiku's are counted as ``unknown`` (a bounded label).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from prometheus_client import Counter
from pydantic import ValidationError

Outcome = Literal["ok", "client_error", "server_error"]

MCP_TOOL_CALLS = Counter("zhiku_mcp_tool_calls_total", "MCP tool calls answered at /mcp", ["tool", "outcome"])

# JSON-RPC codes that mean the client asked for something wrong.
_CLIENT_CODES = frozenset({-32600, -32601, -32602})

_outcome: ContextVar[dict[str, Outcome] | None] = ContextVar("zhiku_mcp_outcome", default=None)


def mark_outcome(outcome: Outcome) -> None:
    """Record how the current tool call failed (read by :class:`ToolCallMetrics`)."""
    holder = _outcome.get()
    if holder is not None:
        holder["outcome"] = outcome


class ToolCallMetrics:
    """MCP server middleware counting ``tools/call`` by tool and outcome."""

    def __init__(self, tool_names: frozenset[str]) -> None:
        self.tool_names = tool_names

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = (ctx.params or {}).get("name")
        tool = name if isinstance(name, str) and name in self.tool_names else "unknown"
        holder: dict[str, Outcome] = {}
        token = _outcome.set(holder)
        try:
            result = await call_next(ctx)
        except (ValidationError, MCPError) as error:
            client = isinstance(error, ValidationError) or error.error.code in _CLIENT_CODES
            MCP_TOOL_CALLS.labels(tool, "client_error" if client else "server_error").inc()
            raise
        except Exception:
            MCP_TOOL_CALLS.labels(tool, "server_error").inc()
            raise
        finally:
            _outcome.reset(token)
        if isinstance(result, CallToolResult):
            failed = result.is_error
        else:
            failed = isinstance(result, dict) and bool(result.get("isError"))
        MCP_TOOL_CALLS.labels(tool, holder.get("outcome", "client_error") if failed else "ok").inc()
        return result
