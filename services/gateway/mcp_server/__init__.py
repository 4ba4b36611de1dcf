"""The MCP server at ``/mcp``: Zhiku's knowledge bases as tools for MCP clients.

- ``results``: the structured results the tools return (their output schemas).
- ``calls``: what every tool call shares: the caller, the error translation.
- ``metrics``: tool calls counted by tool and outcome.
- ``tools``: the four tools, each a thin use of what the HTTP routes use.
- ``endpoint``: the MCP server and its streamable HTTP transport mounted on the gateway.
"""
