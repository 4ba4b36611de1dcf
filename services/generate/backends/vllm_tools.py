"""Tool calling for the in-process vLLM engine, the way ``vllm serve`` does it.

``vllm serve --enable-auto-tool-choice --tool-call-parser NAME`` puts the tools into the model's
chat template and reads the calls back out of the generated text with the named parser; the
engine itself knows nothing of tools. The same two steps run here with vLLM's own parsers
(``VLLM_TOOL_CALL_PARSER``), imported only when set. The answer of a request with tools is read
whole before it is parsed, so its calls (or its text) arrive in one piece at the end: a call
is only known to be one once the parser has seen it complete.
"""

from __future__ import annotations

import importlib
import uuid
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.generate.tooling import ToolCallDelta, ToolOptions

# Where vLLM keeps its parser registry, newest first (it moved between releases).
PARSER_MODULES = ("vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers")
PROTOCOL_MODULES = ("vllm.entrypoints.openai.chat_completion.protocol", "vllm.entrypoints.openai.protocol")


def _first_module(names: tuple[str, ...], attribute: str) -> Any:
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, attribute):
            return getattr(module, attribute)
    raise FailedPrecondition(f"this vLLM release has no {attribute} (looked in {', '.join(names)})")


def load_parser(name: str, tokenizer: Any) -> Any:
    """vLLM's tool parser ``name`` for ``tokenizer``; fails at start-up on an unknown name."""
    manager = _first_module(PARSER_MODULES, "ToolParserManager")
    try:
        parser_class = manager.get_tool_parser(name)
    except KeyError as error:
        raise FailedPrecondition(
            f"ZHIKU_GENERATE_VLLM_TOOL_CALL_PARSER {name!r} is not a vLLM tool parser"
        ) from error
    return parser_class(tokenizer)


def check_choice(options: ToolOptions) -> None:
    """The engine has no guided decoding wired here, so only "auto" (and "none") are honoured."""
    if options.tools and options.tool_choice not in (None, "auto", "none"):
        raise InvalidArgument(
            f"tool_choice {options.tool_choice!r} is not supported by the vllm backend (only auto or none): "
            "it would need guided decoding; let the model choose, or use the openai backend"
        )


def parse_calls(parser: Any, text: str, options: ToolOptions) -> tuple[str, tuple[ToolCallDelta, ...]]:
    """(text, calls) of a whole answer: the calls the parser finds, else the text as it is."""
    request_class = _first_module(PROTOCOL_MODULES, "ChatCompletionRequest")
    request = request_class(model="zhiku", messages=[], tools=list(options.tools), tool_choice="auto")
    found = parser.extract_tool_calls(text, request)
    if not found.tools_called:
        return text, ()
    calls = tuple(
        ToolCallDelta(
            index=index,
            id=getattr(call, "id", "") or f"call_{uuid.uuid4().hex[:24]}",
            name=call.function.name,
            arguments=call.function.arguments,
        )
        for index, call in enumerate(found.tool_calls)
    )
    return found.content or "", calls
