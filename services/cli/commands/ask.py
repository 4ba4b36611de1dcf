"""``zhiku ask "question" [--kb NAME]``: stream an answer, then list the numbered sources.

Tokens are printed as they arrive (``stream: true`` on ``/v1/chat/completions``), the way the
web UI shows them; the citations come on the first chunk and are printed after the answer so
they never interleave with it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from services.cli import render
from services.cli.commands.search import Mode
from services.cli.context import current, reports_errors


def request_body(
    question: str,
    model: str,
    kb: str | None,
    top_k: int | None,
    score_threshold: float | None,
    temperature: float | None,
    mode: Mode | None,
    conversation: str | None,
    file_chat: str | None,
) -> dict[str, Any]:
    """The chat request: only the options the user gave, so the gateway's defaults apply."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": question}]}
    optional = {
        "knowledge_base": kb,
        "top_k": top_k,
        "score_threshold": score_threshold,
        "temperature": temperature,
        "mode": mode.value if mode else None,
        "conversation_id": conversation,
        "file_chat_id": file_chat,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


@reports_errors
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="your question", show_default=False)],
    kb: Annotated[str | None, typer.Option("--kb", help="answer from this knowledge base")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="served model id")] = "default",
    top_k: Annotated[
        int | None, typer.Option("--top-k", "-k", min=1, max=100, help="passages to use")
    ] = None,
    score_threshold: Annotated[
        float | None, typer.Option("--score-threshold", min=0.0, max=1.0, help="drop weaker passages")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t", min=0.0, max=2.0)] = None,
    mode: Annotated[Mode | None, typer.Option("--mode", help="retrieval mode")] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="continue this stored conversation")
    ] = None,
    file_chat: Annotated[
        str | None, typer.Option("--file-chat", help="answer from files uploaded to this file chat")
    ] = None,
) -> None:
    """Ask a question; the answer streams in, followed by its numbered sources."""
    state = current(ctx)
    body = request_body(
        question, model, kb, top_k, score_threshold, temperature, mode, conversation, file_chat
    )
    citations: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    with state.client() as client:
        for chunk in client.chat_stream(body):
            if chunk.get("citations"):
                citations = chunk["citations"]
            for key in ("conversation_id", "message_id"):
                if chunk.get(key):
                    ids[key] = str(chunk[key])
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    state.console.print(delta, end="", markup=False)
        state.console.print()
        if citations:
            state.console.print("\n[bold]Sources[/]")
            for line in render.source_lines(citations, client.absolute):
                state.console.print(line)
        elif kb or file_chat:
            state.console.print("\n[dim]No passage passed the score threshold.[/]")
    if "conversation_id" in ids:
        state.console.print(f"[dim]conversation {escape(ids['conversation_id'])}[/]")
