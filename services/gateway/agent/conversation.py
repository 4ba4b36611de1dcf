"""An agent run as conversation messages: the request's turns for the generate service, and
the run's steps stored after it, so a reopened conversation shows each tool call and result
and the next turn reaches the model complete."""

from __future__ import annotations

from services.gateway.agent.loop import AgentRun
from services.gateway.chat.history import HistoryTurn
from services.gateway.chat.tool_support import tool_fields
from services.gateway.schemas.openai import ChatMessageIn
from services.gateway.store import GatewayStore
from services.gateway.store.conversations import NewMessage
from zhiku.v1 import generate_pb2


def agent_messages(messages: list[ChatMessageIn]) -> list[generate_pb2.ChatMessage]:
    """The conversation for the generate service, tool turns included."""
    return [
        generate_pb2.ChatMessage(role=message.role, content=message.text(), **tool_fields(message))
        for message in messages
    ]


def run_messages(turn: HistoryTurn, run: AgentRun) -> list[NewMessage]:
    """The turn's question, each round's calls and results, then the answer (under the id the
    response announced)."""
    stored = list(turn.asked or [NewMessage(role="user", content=turn.user_message)])
    for round_number in dict.fromkeys(step.step for step in run.steps):
        steps = [step for step in run.steps if step.step == round_number]
        calls = [
            {"id": s.call_id, "type": "function", "function": {"name": s.tool, "arguments": s.arguments}}
            for s in steps
        ]
        stored.append(NewMessage(role="assistant", content="", tool_turn={"tool_calls": calls}))
        stored.extend(
            NewMessage(role="tool", content=s.result, tool_turn={"tool_call_id": s.call_id, "name": s.tool})
            for s in steps
        )
    stored.append(
        NewMessage(role="assistant", content=run.answer, citations=run.citations, id=turn.message_id)
    )
    return stored


async def stored_run(store: GatewayStore, turn: HistoryTurn, run: AgentRun) -> None:
    """Append the run to the turn's conversation (nothing without one)."""
    if turn.conversation_id is None:
        return
    await store.run(store.conversations.append, turn.conversation_id, run_messages(turn, run))
