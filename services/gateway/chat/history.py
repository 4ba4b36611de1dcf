"""What ``/v1/chat/completions`` does around generation when given ``conversation_id`` or
``file_chat_id``: resolve them into the request, and store the new turn afterwards.

Kept apart from ``planning`` and ``generation`` so each stays small: this module knows the
store, they know the retrieval path and the generate service.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from services.gateway.access import Principal, visible_owner
from services.gateway.errors import HttpApiError
from services.gateway.file_chat import lifecycle
from services.gateway.schemas.openai import KB_MODEL_PREFIX, ChatCompletionRequest, ChatMessageIn
from services.gateway.store import GatewayStore
from services.gateway.store.conversations import Message, NewMessage


@dataclass
class HistoryTurn:
    """The request as it goes to generation, plus what to store once the answer is known."""

    request: ChatCompletionRequest
    conversation_id: str | None = None
    user_message: str = ""
    # The turn's messages to store when it carries tool results (else just ``user_message``).
    asked: list[NewMessage] | None = None
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def extra_fields(self) -> dict[str, Any]:
        """``conversation_id`` and ``message_id`` on the response (first chunk when streaming)."""
        if self.conversation_id is None:
            return {}
        return {"conversation_id": self.conversation_id, "message_id": self.message_id}

    async def store_answer(
        self,
        store: GatewayStore,
        answer: str,
        citations: list[dict[str, Any]],
        grounding: dict[str, Any] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store the exchange; ``grounding`` is what the answer said about itself (abstained,
        retrieval_query, unsupported), kept so a reopened conversation can show it again, and
        ``tool_calls`` the calls it made (the next turn sends their results)."""
        if self.conversation_id is None:
            return
        await store.run(
            store.conversations.append_turn,
            self.conversation_id,
            self.user_message,
            answer,
            self.message_id,
            citations,
            grounding,
            self.asked,
            tool_calls,
        )


def _new_turn(messages: list[ChatMessageIn]) -> list[NewMessage] | None:
    """The messages a turn adds after the stored history when it carries tool results: those
    after the last assistant message, as sent (None: an ordinary question, stored as before)."""
    last_answer = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    new = [m for m in messages[last_answer + 1 :] if m.role in ("user", "tool")]
    if not any(m.role == "tool" for m in new):
        return None
    return [
        NewMessage(
            role=m.role,
            content=m.text(),
            tool_turn={"tool_call_id": m.tool_call_id or "", "name": m.name or ""}
            if m.role == "tool"
            else {},
        )
        for m in new
    ]


def _stored_message(message: Message) -> ChatMessageIn:
    """A stored message as the request's history, tool fields included."""
    turn = message.tool_turn
    return ChatMessageIn(
        role=message.role,
        content=message.content,
        tool_calls=turn.get("tool_calls") or None,
        tool_call_id=turn.get("tool_call_id") or None,
        name=turn.get("name") or None,
    )


def _from_question(messages: list[Message]) -> list[Message]:
    """``messages`` without leading tool results: a window that starts inside a tool exchange
    would send a result without the call it answers, which models refuse."""
    first = next((i for i, m in enumerate(messages) if m.role != "tool"), len(messages))
    return messages[first:]


def _names_kb(body: ChatCompletionRequest) -> bool:
    """A knowledge base named, or web search asked for (so no stored knowledge base applies)."""
    searches_web = body.search_engine not in (None, False, "")
    return bool(body.knowledge_base) or body.model.startswith(KB_MODEL_PREFIX) or searches_web


async def prepare_turn(
    body: ChatCompletionRequest, store: GatewayStore, principal: Principal | None, history_messages: int
) -> HistoryTurn:
    """Validate ``n`` and refuse unsupported features, resolve file chat and conversation (its
    latest ``history_messages`` go in front of the new turn); both must be the caller's key's."""
    if body.n is not None and body.n != 1:
        raise HttpApiError(
            400, f"n={body.n} is not supported: Zhiku returns exactly one choice (n=1)", param="n"
        )
    if (refusal := body.refused_fields()) is not None:
        raise refusal
    updates: dict[str, Any] = {}
    temporary = False
    if body.file_chat_id is not None:
        if _names_kb(body):
            raise HttpApiError(
                422,
                "file_chat_id cannot be combined with a knowledge base or search_engine",
                param="file_chat_id",
            )
        chat = await lifecycle.find_file_chat(store, body.file_chat_id, principal)
        updates["knowledge_base"] = chat.knowledge_base
        temporary = True
    turn = HistoryTurn(request=body)
    if body.conversation_id is not None:
        conversation = await store.run(
            store.conversations.get, body.conversation_id, visible_owner(principal)
        )
        if conversation is None:
            raise HttpApiError(
                404, f"conversation {body.conversation_id!r} not found", param="conversation_id"
            )
        recent = (
            conversation.messages[len(conversation.messages) - history_messages :] if history_messages else []
        )
        history = [_stored_message(message) for message in _from_question(recent)]
        updates["messages"] = [*history, *body.messages]
        if conversation.knowledge_base and not temporary and not _names_kb(body):
            updates["knowledge_base"] = conversation.knowledge_base
        turn.conversation_id = conversation.id
        turn.user_message = next(
            (message.text() for message in reversed(body.messages) if message.role == "user"), ""
        )
        turn.asked = _new_turn(body.messages)
    # Every knowledge base named here is authorized when it is looked up (services.gateway.authz).
    turn.request = body.model_copy(update=updates) if updates else body
    return turn
