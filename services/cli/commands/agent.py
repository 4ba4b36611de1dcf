"""``zhiku agent "question" [--kb NAME] [--tool NAME]``: run agent chat in the terminal.

Each tool step is printed as it happens (the tool, its arguments, then a one-line result),
dimmed so the answer that follows stands out; the answer streams in, then its sources. The
steps come from ``/v1/agent/completions``' ``agent_step`` chunks, the same the web UI shows.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from services.cli import render
from services.cli.context import current, reports_errors


def request_body(
    question: str,
    model: str,
    kbs: list[str],
    tools: list[str],
    max_steps: int | None,
    conversation: str | None,
) -> dict[str, Any]:
    """The agent request: only the options the user gave, so the gateway's defaults apply."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": question}]}
    if kbs:
        body["knowledge_bases"] = kbs
    if tools:
        body["tools"] = tools
    if max_steps is not None:
        body["max_steps"] = max_steps
    if conversation is not None:
        body["conversation_id"] = conversation
    return body


def step_line(step: dict[str, Any]) -> str:
    """One step as a line of rich markup: the call, or its result (errors in red)."""
    tool = escape(str(step.get("tool", "")))
    if step.get("type") == "tool_call":
        return f"[dim]→ {tool}({escape(render.one_line(str(step.get('arguments', '')), 160))})[/]"
    result = escape(render.one_line(str(step.get("summary") or step.get("result", "")), 160))
    return f"[red]✗ {tool}: {result}[/]" if step.get("is_error") else f"[dim]← {tool}: {result}[/]"


@reports_errors
def agent(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="your question", show_default=False)],
    kb: Annotated[
        list[str] | None, typer.Option("--kb", help="knowledge base the search tool uses (repeatable)")
    ] = None,
    tool: Annotated[
        list[str] | None, typer.Option("--tool", help="offer only this enabled tool (repeatable)")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="a served model that can call tools")
    ] = "default",
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, max=20, help="tool rounds")] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="continue this stored conversation")
    ] = None,
) -> None:
    """Ask an agent: the model calls the deployment's tools, each step is shown, then the answer."""
    state = current(ctx)
    body = request_body(question, model, kb or [], tool or [], max_steps, conversation)
    citations: list[dict[str, Any]] = []
    limit = ""
    answering = False
    with state.client() as client:
        for chunk in client.agent_stream(body):
            if chunk.get("agent_step"):
                state.console.print(step_line(chunk["agent_step"]))
                continue
            citations = chunk.get("citations") or citations
            limit = chunk.get("agent_limit") or limit
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    if not answering:
                        state.console.print()
                        answering = True
                    state.console.print(delta, end="", markup=False)
        state.console.print()
        if limit:
            state.console.print(f"[yellow]stopped by the {escape(limit.replace('_', ' '))}[/]")
        if citations:
            state.console.print("\n[bold]Sources[/]")
            for line in render.source_lines(citations, client.absolute):
                state.console.print(line)
