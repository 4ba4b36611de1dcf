"""The one interface every agent tool implements, and what a tool call gives back.

A tool is a small object with a ``name``, a ``description`` and ``parameters`` (a JSON Schema,
exactly OpenAI's ``tools[].function.parameters``), and one coroutine ``run``. The agent loop
does not know any tool by name: it renders the registry as OpenAI ``tools`` and calls ``run``
with the model's arguments. A tool reports a mistake the model can correct (bad arguments, a
refused SQL statement, a page that cannot be read) as :class:`ToolError`, whose message goes
back to the model; anything else is the gateway's own failure and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from services.gateway.agent.tools.data_fence import as_data

if TYPE_CHECKING:
    from services.gateway.clients import ServiceClients
    from services.gateway.config import GatewaySettings


SUMMARY_CHARS = 200


class ToolError(Exception):
    """A failure the model should read and may correct; the message is written for it."""


@dataclass(frozen=True)
class ToolContext:
    """What a call needs from the request it serves.

    The caller is not here on purpose: knowledge-base access is decided by the one guard on
    the gateway's gRPC channels, for the caller the access middleware put in the request's
    context (``services.gateway.authz``), so a tool cannot widen or forget it.
    ``knowledge_bases`` are the ones the request named, searched when the model names none.
    ``first_citation`` numbers the passages a call returns after those earlier calls of the same
    run returned, so an answer's ``[n]`` points at one passage however many searches it took.
    """

    settings: GatewaySettings
    clients: ServiceClients | None = None
    knowledge_bases: tuple[str, ...] = ()
    first_citation: int = 1


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returns.

    ``text`` is what the model reads; ``data`` the same as structured JSON (for the stream's
    step events and the stored conversation); ``citations`` what a final answer can carry.
    ``summary`` is one line for the step shown to the user. ``external`` marks content from outside Zhiku (web pages, search results, SQL rows): it is
    put in front of the model as delimited data, never as instructions (:meth:`for_model`).
    """

    text: str
    data: Any = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    external: bool = False
    # One line for a step event ("3 passages from handbook"); empty: the text's beginning.
    summary: str = ""

    def short(self, limit: int = SUMMARY_CHARS) -> str:
        """The summary, or the text's first line, at most ``limit`` characters."""
        line = self.summary or (self.text.strip().splitlines() or [""])[0]
        return line if len(line) <= limit else line[: limit - 1] + "…"

    def for_model(self, tool_name: str) -> str:
        """The content of the ``role: "tool"`` message answering this call."""
        return as_data(self.text, source=tool_name) if self.external else self.text


@runtime_checkable
class Tool(Protocol):
    """One built-in tool. ``parameters`` is a JSON Schema object describing ``arguments``."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult: ...


class Arguments(BaseModel):
    """Base of a tool's arguments: unknown fields are refused, so a typo is an error the model
    sees instead of a silently ignored setting."""

    model_config = ConfigDict(extra="forbid")


ArgumentsT = TypeVar("ArgumentsT", bound=Arguments)


def parameters_of(model: type[Arguments]) -> dict[str, Any]:
    """The JSON Schema of ``model`` as OpenAI's ``parameters``: pydantic's titles dropped, and an
    optional field shown as its plain type (not ``anyOf`` with null), which every model's
    tool-call grammar handles."""
    schema: dict[str, Any] = _plain(model.model_json_schema())
    return schema


def _plain(node: Any) -> Any:
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if not isinstance(node, dict):
        return node
    variants = node.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants and len(variants) == 2:
        (kept,) = [variant for variant in variants if variant != {"type": "null"}]
        node = {**{k: v for k, v in node.items() if k not in ("anyOf", "default")}, **kept}
    return {
        key: _plain(value) for key, value in node.items() if not (key == "title" and isinstance(value, str))
    }


def parse_arguments(model: type[ArgumentsT], arguments: dict[str, Any]) -> ArgumentsT:
    """``arguments`` checked against ``model``; every problem named in one :class:`ToolError`."""
    try:
        return model.model_validate(arguments)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'arguments'}: {item['msg']}"
            for item in error.errors()
        )
        raise ToolError(f"invalid arguments: {problems}") from None
