"""Conversations, their messages (with citations) and feedback on answers."""

from __future__ import annotations

import builtins
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Row, Select, delete, select
from sqlalchemy.orm import Session

from services.common.database import rows_matched
from services.gateway.store.database import Database
from services.gateway.store.tables import ConversationRow, FeedbackRow, MessageRow

_Query = TypeVar("_Query", bound=Select[Any])


@dataclass(frozen=True)
class FeedbackRecord:
    message_id: str
    score: int
    reason: str


@dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    role: str
    content: str
    citations: list[dict[str, Any]]
    created_at: float
    feedback: FeedbackRecord | None = None
    # abstained / retrieval_query / unsupported of a knowledge-base answer ({} otherwise).
    grounding: dict[str, Any] = field(default_factory=dict)
    # A tool turn's OpenAI fields: {"tool_calls": [...]} or {"tool_call_id", "name"} ({} otherwise).
    tool_turn: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    title: str
    knowledge_base: str | None
    created_at: float
    updated_at: float
    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class NewMessage:
    """A message to append; ``id`` may be chosen up front (streams announce it first)."""

    role: str
    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    grounding: dict[str, Any] = field(default_factory=dict)
    tool_turn: dict[str, Any] = field(default_factory=dict)


def _conversation(row: ConversationRow, messages: list[Message] | None = None) -> ConversationRecord:
    return ConversationRecord(
        id=row.id,
        title=row.title,
        knowledge_base=row.knowledge_base,
        created_at=row.created_at,
        updated_at=row.updated_at,
        messages=messages or [],
    )


def _owned(query: _Query, owner: str | None) -> _Query:
    """Only ``owner``'s conversations; ``owner`` None means every conversation (admin, open)."""
    return query if owner is None else query.where(ConversationRow.owner == owner)


class ConversationRepo:
    """Every call takes ``owner``: None sees everything, a key id sees only that key's rows
    (someone else's conversation reads as missing)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        title: str = "",
        knowledge_base: str | None = None,
        owner: str | None = None,
        conversation_id: str | None = None,
    ) -> ConversationRecord:
        """A new conversation; ``conversation_id`` is chosen by the client only on Chatchat's
        routes, whose clients name conversations themselves (uuid4 hex, as ours)."""
        now = time.time()
        row = ConversationRow(
            id=conversation_id or uuid.uuid4().hex,
            title=title,
            knowledge_base=knowledge_base,
            owner=owner,
            created_at=now,
            updated_at=now,
        )
        with self.db.session(write=True) as session:
            session.add(row)
        return _conversation(row)

    def _find(self, session: Session, conversation_id: str, owner: str | None) -> ConversationRow | None:
        query = _owned(select(ConversationRow).where(ConversationRow.id == conversation_id), owner)
        return session.scalar(query)

    def list(self, owner: str | None = None, limit: int = 100) -> list[ConversationRecord]:
        """Most recently active first."""
        with self.db.session() as session:
            rows = session.scalars(
                _owned(select(ConversationRow), owner)
                .order_by(ConversationRow.updated_at.desc(), ConversationRow.created_at.desc())
                .limit(limit)
            ).all()
            return [_conversation(row) for row in rows]

    def get(self, conversation_id: str, owner: str | None = None) -> ConversationRecord | None:
        with self.db.session() as session:
            row = self._find(session, conversation_id, owner)
            if row is None:
                return None
            # An outer join: a message without feedback comes with None.
            pairs: Sequence[Row[MessageRow, FeedbackRow | None]] = session.execute(
                select(MessageRow, FeedbackRow)
                .outerjoin(FeedbackRow, FeedbackRow.message_id == MessageRow.id)
                .where(MessageRow.conversation_id == conversation_id)
                .order_by(MessageRow.seq)
            ).all()
            messages = [
                Message(
                    id=message.id,
                    conversation_id=message.conversation_id,
                    role=message.role,
                    content=message.content,
                    citations=json.loads(message.citations or "[]"),
                    created_at=message.created_at,
                    grounding=json.loads(message.grounding or "{}"),
                    tool_turn=json.loads(message.tool_turn or "{}"),
                    feedback=None
                    if feedback is None
                    else FeedbackRecord(message_id=message.id, score=feedback.score, reason=feedback.reason),
                )
                for message, feedback in pairs
            ]
            return _conversation(row, messages)

    def rename(self, conversation_id: str, title: str, owner: str | None = None) -> ConversationRecord | None:
        with self.db.session(write=True) as session:
            row = self._find(session, conversation_id, owner)
            if row is None:
                return None
            row.title = title
            row.updated_at = time.time()
            return _conversation(row)

    def delete(self, conversation_id: str, owner: str | None = None) -> bool:
        with self.db.session(write=True) as session:
            if self._find(session, conversation_id, owner) is None:
                return False
            # Explicit, so SQLite without the foreign-key pragma and PostgreSQL behave alike.
            message_ids = select(MessageRow.id).where(MessageRow.conversation_id == conversation_id)
            session.execute(delete(FeedbackRow).where(FeedbackRow.message_id.in_(message_ids)))
            session.execute(delete(MessageRow).where(MessageRow.conversation_id == conversation_id))
            deleted = session.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id))
            return bool(rows_matched(deleted))

    def append_turn(
        self,
        conversation_id: str,
        question: str,
        answer: str,
        answer_id: str,
        citations: builtins.list[dict[str, Any]] | None = None,
        grounding: dict[str, Any] | None = None,
        asked: builtins.list[NewMessage] | None = None,
        tool_calls: builtins.list[dict[str, Any]] | None = None,
    ) -> builtins.list[Message]:
        """One exchange: the user's question (or ``asked``: the turn's messages, such as the
        results of the tools the previous answer called), then the answer under the id
        announced for it, with the ``tool_calls`` it made."""
        tool_turn = {"tool_calls": tool_calls} if tool_calls else {}
        reply = NewMessage("assistant", answer, citations or [], answer_id, grounding or {}, tool_turn)
        return self.append(conversation_id, [*(asked or [NewMessage(role="user", content=question)]), reply])

    # builtins.list: within the class, `list` is the method above.
    def append(self, conversation_id: str, messages: builtins.list[NewMessage]) -> builtins.list[Message]:
        """Append messages in order; [] when the conversation is gone (deleted meanwhile)."""
        now = time.time()
        stored = []
        with self.db.session(write=True) as session:
            conversation = session.get(ConversationRow, conversation_id)
            if conversation is None:
                return []
            for new in messages:
                session.add(
                    MessageRow(
                        id=new.id,
                        conversation_id=conversation_id,
                        role=new.role,
                        content=new.content,
                        citations=json.dumps(new.citations, ensure_ascii=False),
                        grounding=json.dumps(new.grounding, ensure_ascii=False) if new.grounding else None,
                        tool_turn=json.dumps(new.tool_turn, ensure_ascii=False) if new.tool_turn else None,
                        created_at=now,
                    )
                )
                stored.append(
                    Message(
                        id=new.id,
                        conversation_id=conversation_id,
                        role=new.role,
                        content=new.content,
                        citations=new.citations,
                        created_at=now,
                        grounding=new.grounding,
                        tool_turn=new.tool_turn,
                    )
                )
            conversation.updated_at = now
            if not conversation.title:
                first_user = next((m.content for m in messages if m.role == "user" and m.content), "")
                conversation.title = first_user[:80]
        return stored

    def set_feedback(
        self, message_id: str, score: int, reason: str, owner: str | None = None
    ) -> FeedbackRecord | None:
        """Record (or replace) the feedback on a message; None when the message is unknown."""
        with self.db.session(write=True) as session:
            query = (
                select(MessageRow.id)
                .join(ConversationRow, ConversationRow.id == MessageRow.conversation_id)
                .where(MessageRow.id == message_id)
            )
            if session.scalar(_owned(query, owner)) is None:
                return None
            row = session.get(FeedbackRow, message_id)
            if row is None:
                session.add(
                    FeedbackRow(message_id=message_id, score=score, reason=reason, created_at=time.time())
                )
            else:
                row.score, row.reason, row.created_at = score, reason, time.time()
        return FeedbackRecord(message_id=message_id, score=score, reason=reason)
