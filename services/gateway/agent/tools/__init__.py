"""Built-in agent tools: each a small module behind the one :class:`Tool` interface, enabled
per deployment by ``ZHIKU_GATEWAY_AGENT_TOOLS`` and built by :func:`build_registry`."""

from services.gateway.agent.tools.base import Tool, ToolContext, ToolError, ToolResult
from services.gateway.agent.tools.data_fence import as_data
from services.gateway.agent.tools.registry import ToolRegistry, build_registry

__all__ = ["Tool", "ToolContext", "ToolError", "ToolRegistry", "ToolResult", "as_data", "build_registry"]
