"""OpenAI tool calling as the generate service carries it: the request's options and the calls.

A tool's parameters are an arbitrary JSON Schema, so ``tools``, ``tool_choice`` and
``response_format`` travel as JSON text in the proto and are checked here once, with errors
that name the field; backends then pass them on unchanged (``as_openai_kwargs``). Calls come
back as OpenAI streams them: the first piece of a call carries its id and name, later pieces
append to its ``arguments``; ``deltas_from_openai`` reads that shape from any OpenAI-protocol
stream (an upstream server, llama-cpp-python).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from zhiku.v1 import generate_pb2

TOOL_CHOICE_WORDS = ("auto", "none", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
MAX_TOOLS = 128


@dataclass(frozen=True)
class ToolCall:
    """A call an assistant turn made (OpenAI's ``message.tool_calls[i]``)."""

    id: str
    name: str
    arguments: str  # JSON text, exactly as the model wrote it

    @classmethod
    def from_pb(cls, where: str, call: generate_pb2.ToolCall) -> ToolCall:
        if not call.id or not call.name:
            raise InvalidArgument(f"{where}.tool_calls: every call needs an id and a function name")
        return cls(id=call.id, name=call.name, arguments=call.arguments)

    def as_dict(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


@dataclass(frozen=True)
class ToolCallDelta:
    """One streamed piece of a call (OpenAI's ``delta.tool_calls[i]``)."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""

    def to_pb(self) -> generate_pb2.ToolCallDelta:
        return generate_pb2.ToolCallDelta(
            index=self.index, id=self.id, name=self.name, arguments=self.arguments
        )


def _json(field_name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidArgument(f"{field_name} is not valid JSON: {error}") from error


def _tool_name(index: int, tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
        raise InvalidArgument(f'tools[{index}] must be {{"type": "function", "function": {{"name": ...}}}}')
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"tools[{index}].function.name is missing")
    return name


@dataclass(frozen=True)
class ToolOptions:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` of a request
    (empty: a plain chat request)."""

    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    names: frozenset[str] = field(default=frozenset())

    @property
    def response_type(self) -> str:
        return str((self.response_format or {}).get("type", "text"))

    @property
    def offered(self) -> bool:
        """Tools the model may call (``tool_choice`` "none" offers none)."""
        return bool(self.tools) and self.tool_choice != "none"

    @classmethod
    def from_pb(cls, request: generate_pb2.GenerateRequest) -> ToolOptions:
        tools: tuple[dict[str, Any], ...] = ()
        if request.tools_json:
            parsed = _json("tools", request.tools_json)
            if not isinstance(parsed, list):
                raise InvalidArgument("tools must be a JSON array of function tools")
            if len(parsed) > MAX_TOOLS:
                raise InvalidArgument(f"at most {MAX_TOOLS} tools, got {len(parsed)}")
            tools = tuple(parsed)
        names = [_tool_name(index, tool) for index, tool in enumerate(tools)]
        if len(set(names)) != len(names):
            raise InvalidArgument("tools: two tools have the same function name")
        choice = _json("tool_choice", request.tool_choice_json) if request.tool_choice_json else None
        if choice is not None:
            cls._check_choice(choice, set(names))
        response_format = None
        if request.response_format_json:
            response_format = _json("response_format", request.response_format_json)
            kind = response_format.get("type") if isinstance(response_format, dict) else None
            if kind not in RESPONSE_FORMATS:
                raise InvalidArgument(f"response_format.type must be one of {', '.join(RESPONSE_FORMATS)}")
        return cls(
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=(
                request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None
            ),
            response_format=response_format,
            names=frozenset(names),
        )

    @staticmethod
    def _check_choice(choice: Any, names: set[str]) -> None:
        if isinstance(choice, str):
            if choice not in TOOL_CHOICE_WORDS:
                words = ", ".join(TOOL_CHOICE_WORDS)
                raise InvalidArgument(f"tool_choice must be one of {words} or a function")
            if choice == "required" and not names:
                raise InvalidArgument("tool_choice 'required' needs tools")
            return
        function = choice.get("function") if isinstance(choice, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or (isinstance(choice, dict) and choice.get("type") != "function"):
            raise InvalidArgument(
                'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {...}}'
            )
        if name not in names:
            raise InvalidArgument(f"tool_choice names function {name!r}, which is not among the tools")

    def as_openai_kwargs(self) -> dict[str, Any]:
        """The request fields as OpenAI's API spells them (only those the client set)."""
        kwargs: dict[str, Any] = {}
        if self.tools:
            kwargs["tools"] = list(self.tools)
            if self.tool_choice is not None:
                kwargs["tool_choice"] = self.tool_choice
            if self.parallel_tool_calls is not None:
                kwargs["parallel_tool_calls"] = self.parallel_tool_calls
        if self.response_format is not None:
            kwargs["response_format"] = self.response_format
        return kwargs


def deltas_from_openai(pieces: Iterable[Mapping[str, Any]] | None) -> tuple[ToolCallDelta, ...]:
    """``delta.tool_calls`` of an OpenAI-protocol chunk as ToolCallDelta pieces."""
    found = []
    for position, piece in enumerate(pieces or ()):
        function = piece.get("function") or {}
        index = piece.get("index")
        found.append(
            ToolCallDelta(
                index=int(index) if isinstance(index, int) else position,
                id=str(piece.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or ""),
            )
        )
    return tuple(found)


class CallPieces:
    """Reads one answer's ``delta.tool_calls`` into ToolCallDelta pieces in OpenAI's form: id and
    name on a call's first piece only (llama-cpp-python repeats them on every piece, which a
    client appending pieces would turn into "get_weatherget_weather")."""

    def __init__(self) -> None:
        self._started: set[int] = set()

    def read(self, pieces: Iterable[Mapping[str, Any]] | None) -> tuple[ToolCallDelta, ...]:
        found = []
        for piece in deltas_from_openai(pieces):
            if piece.index in self._started:
                piece = ToolCallDelta(index=piece.index, arguments=piece.arguments)
            else:
                self._started.add(piece.index)
            found.append(piece)
        return tuple(found)


def finish_reason_of(openai_reason: str | None) -> str:
    """OpenAI's finish reason in the proto's terms (legacy ``function_call`` is a tool call)."""
    if openai_reason == "length":
        return "length"
    if openai_reason in ("tool_calls", "function_call"):
        return "tool_calls"
    return "stop"
