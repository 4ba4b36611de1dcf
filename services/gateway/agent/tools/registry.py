"""The tools a deployment enables, built from settings, and their OpenAI ``tools`` JSON.

``ZHIKU_GATEWAY_AGENT_TOOLS`` names the enabled tools; each name builds one or more tools
(``text2sql`` brings ``describe_database``, which it needs). A misconfigured tool (an unknown
name, a search provider without its URL or key, a database URL text2sql cannot use) fails at
startup with the setting to fix, not on the first call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from services.gateway.agent.tools.base import Tool, ToolContext, ToolError, ToolResult
from services.gateway.agent.tools.calculate import CalculateTool
from services.gateway.agent.tools.knowledge_base import SearchKnowledgeBaseTool
from services.gateway.agent.tools.read_url import ReadUrlTool
from services.gateway.agent.tools.search_internet import SearchInternetTool
from services.gateway.agent.tools.sql_directory import SqlDatabaseDirectory
from services.gateway.agent.tools.text2sql import DescribeDatabaseTool, Text2SqlTool
from services.gateway.agent.tools.web_search import build_provider
from services.gateway.config import GatewaySettings


def _search_knowledge_base(settings: GatewaySettings, directory: SqlDatabaseDirectory) -> list[Tool]:
    return [SearchKnowledgeBaseTool()]


def _calculate(settings: GatewaySettings, directory: SqlDatabaseDirectory) -> list[Tool]:
    return [CalculateTool()]


def _search_internet(settings: GatewaySettings, directory: SqlDatabaseDirectory) -> list[Tool]:
    provider = build_provider(
        settings.agent_search_provider, settings.agent_search_url, settings.agent_search_api_key
    )
    return [
        SearchInternetTool(
            provider, timeout_s=settings.agent_tool_timeout_s, max_results=settings.agent_search_max_results
        )
    ]


def _read_url(settings: GatewaySettings, directory: SqlDatabaseDirectory) -> list[Tool]:
    return [
        ReadUrlTool(
            timeout_s=settings.agent_tool_timeout_s,
            max_bytes=settings.agent_read_url_max_bytes,
            max_chars=settings.agent_read_url_max_chars,
            allow_private=settings.agent_read_url_allow_private,
        )
    ]


def _text2sql(settings: GatewaySettings, directory: SqlDatabaseDirectory) -> list[Tool]:
    return [DescribeDatabaseTool(directory), Text2SqlTool(directory)]


FACTORIES: dict[str, Callable[[GatewaySettings, SqlDatabaseDirectory], list[Tool]]] = {
    "search_knowledge_base": _search_knowledge_base,
    "calculate": _calculate,
    "search_internet": _search_internet,
    "read_url": _read_url,
    "text2sql": _text2sql,
}


class ToolRegistry:
    """The enabled tools by name, and the SQL databases text2sql may use (whether or not it is
    enabled, so an admin can register them first)."""

    def __init__(self, tools: list[Tool], sql_databases: SqlDatabaseDirectory) -> None:
        self.sql_databases = sql_databases
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools.values())

    def __len__(self) -> int:
        return len(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def get(self, name: str) -> Tool:
        tool = self.tools.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}; available: {', '.join(self.tools) or 'none'}")
        return tool

    def subset(self, names: list[str]) -> ToolRegistry:
        """Only the tools ``names`` (each enabled here), sharing this registry's databases."""
        return ToolRegistry([self.get(name) for name in dict.fromkeys(names)], self.sql_databases)

    def openai_tools(self) -> list[dict[str, Any]]:
        """The registry as OpenAI's ``tools`` request field."""
        return [
            {
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
            }
            for tool in self
        ]

    async def run(self, name: str, arguments: str | dict[str, Any], context: ToolContext) -> ToolResult:
        """Call ``name`` with the model's arguments (OpenAI sends them as a JSON string)."""
        tool = self.get(name)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as error:
                raise ToolError(f"the arguments of {name} are not valid JSON: {error.msg}") from None
        if not isinstance(arguments, dict):
            raise ToolError(f"the arguments of {name} must be a JSON object")
        return await tool.run(arguments, context)

    def close(self) -> None:
        """Release what tools hold (database connection pools)."""
        self.sql_databases.close()


def build_registry(settings: GatewaySettings) -> ToolRegistry:
    """The tools ``settings.agent_tools`` enables; ValueError naming a misconfiguration."""
    unknown = [name for name in settings.agent_tools if name not in FACTORIES]
    if unknown:
        raise ValueError(
            f"unknown agent tool(s) {', '.join(unknown)} in ZHIKU_GATEWAY_AGENT_TOOLS; "
            f"available: {', '.join(FACTORIES)}"
        )
    directory = SqlDatabaseDirectory(settings)
    tools: list[Tool] = []
    for name in dict.fromkeys(settings.agent_tools):
        tools.extend(FACTORIES[name](settings, directory))
    return ToolRegistry(tools, directory)
