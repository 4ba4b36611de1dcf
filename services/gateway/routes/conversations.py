"""``/v1/conversations`` (create, list, get with messages, rename, delete) and feedback on
answers (``POST /v1/messages/{id}/feedback``).

Messages are written by ``/v1/chat/completions`` when it is given a ``conversation_id``; these
routes read them back with their citations and feedback.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.access import key_of, visible_owner
from services.gateway.audit import AuditAction
from services.gateway.deps import AuditDep, CurrentKey, IngestStub, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError
from services.gateway.schemas.native import KnowledgeBaseNameField
from services.gateway.schemas.refs import CONVERSATION_REF, KB_REF, MESSAGE_REF
from services.gateway.store.conversations import ConversationRecord
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
feedback_router = APIRouter(prefix="/v1/messages", tags=["conversations"])

ConversationId = Annotated[
    str, Path(max_length=64, description="conversation id", json_schema_extra=CONVERSATION_REF)
]
MessageId = Annotated[
    str, Path(max_length=64, description="message id (from a chat response)", json_schema_extra=MESSAGE_REF)
]


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str = Field(default="", max_length=500, examples=["Leave policy"])
    knowledge_base: KnowledgeBaseNameField | None = Field(
        default=None,
        description="default knowledge base of the conversation's chats",
        json_schema_extra=KB_REF,
    )


class RenameConversation(BaseModel):
    title: str = Field(max_length=500, examples=["Annual leave"])


class Conversation(BaseModel):
    id: str
    title: str
    knowledge_base: str | None
    created_at: float = Field(description="unix seconds")
    updated_at: float = Field(description="unix seconds of the last message or rename")

    @classmethod
    def of(cls, record: ConversationRecord) -> Conversation:
        return cls(
            id=record.id,
            title=record.title,
            knowledge_base=record.knowledge_base,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class FeedbackOut(BaseModel):
    score: int
    reason: str


class UnsupportedSentence(BaseModel):
    text: str
    start: int = Field(description="character offset in the answer's content")
    end: int = Field(description="character offset in the answer's content (exclusive)")


class MessageOut(BaseModel):
    id: str
    role: str = Field(examples=["user", "assistant"])
    content: str
    citations: list[dict[str, Any]] = Field(description="passages the answer was generated from")
    created_at: float
    feedback: FeedbackOut | None
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None,
        description="assistant turns that called tools: the calls, as OpenAI's message.tool_calls",
    )
    tool_call_id: str | None = Field(default=None, description="role tool: the call this result answers")
    abstained: bool | None = Field(
        default=None, description="knowledge-base answers: the passages could not answer, the reply says so"
    )
    retrieval_query: str | None = Field(
        default=None, description="knowledge-base answers: what was searched (a follow-up made standalone)"
    )
    unsupported: list[UnsupportedSentence] | None = Field(
        default=None,
        description="knowledge-base answers checked in full: sentences no passage backs, as character "
        "offsets into content (absent for an answer cut short)",
    )


class ConversationWithMessages(Conversation):
    messages: list[MessageOut]


class ConversationList(BaseModel):
    data: list[Conversation]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    score: int = Field(ge=0, le=100, description="100 = thumbs up, 0 = thumbs down", examples=[100])
    reason: str = Field(default="", max_length=4000, examples=["cited the right policy"])


class Feedback(BaseModel):
    id: str = Field(description="the message id")
    score: int
    reason: str


def _not_found(conversation_id: str) -> HttpApiError:
    return HttpApiError(404, f"conversation {conversation_id!r} not found", param="conversation_id")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Conversation)
async def create_conversation(
    body: CreateConversation,
    store: StoreDep,
    principal: CurrentKey,
    ingest: IngestStub,
    settings: SettingsDep,
) -> Conversation:
    """A new conversation of the caller's key; its ``knowledge_base`` must exist (404 otherwise,
    also for one the key may not use)."""
    if body.knowledge_base is not None:
        await ingest.GetKnowledgeBase(
            ingest_pb2.GetKnowledgeBaseRequest(name=body.knowledge_base), timeout=settings.request_timeout_s
        )
    record = await store.run(store.conversations.create, body.title, body.knowledge_base, key_of(principal))
    return Conversation.of(record)


@router.get("", response_model=ConversationList)
async def list_conversations(store: StoreDep, principal: CurrentKey) -> ConversationList:
    """Most recently active first (the latest 100); a non-admin key sees only its own."""
    records = await store.run(store.conversations.list, visible_owner(principal))
    return ConversationList(data=[Conversation.of(record) for record in records])


@router.get("/{conversation_id}", response_model=ConversationWithMessages)
async def get_conversation(
    conversation_id: ConversationId, store: StoreDep, principal: CurrentKey
) -> ConversationWithMessages:
    record = await store.run(store.conversations.get, conversation_id, visible_owner(principal))
    if record is None:
        raise _not_found(conversation_id)
    messages = [
        MessageOut(
            id=message.id,
            role=message.role,
            content=message.content,
            citations=message.citations,
            created_at=message.created_at,
            abstained=message.grounding.get("abstained"),
            retrieval_query=message.grounding.get("retrieval_query"),
            unsupported=message.grounding.get("unsupported"),
            tool_calls=message.tool_turn.get("tool_calls"),
            tool_call_id=message.tool_turn.get("tool_call_id"),
            feedback=None
            if message.feedback is None
            else FeedbackOut(score=message.feedback.score, reason=message.feedback.reason),
        )
        for message in record.messages
    ]
    return ConversationWithMessages(**Conversation.of(record).model_dump(), messages=messages)


@router.patch("/{conversation_id}", response_model=Conversation)
async def rename_conversation(
    conversation_id: ConversationId, body: RenameConversation, store: StoreDep, principal: CurrentKey
) -> Conversation:
    record = await store.run(
        store.conversations.rename, conversation_id, body.title, visible_owner(principal)
    )
    if record is None:
        raise _not_found(conversation_id)
    return Conversation.of(record)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_conversation(
    conversation_id: ConversationId,
    store: StoreDep,
    principal: CurrentKey,
    request: Request,
    audit: AuditDep,
) -> Response:
    """Delete the conversation with its messages and their feedback."""
    if not await store.run(store.conversations.delete, conversation_id, visible_owner(principal)):
        raise _not_found(conversation_id)
    await audit.record(AuditAction.CONVERSATION_DELETE, request=request, target=conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@feedback_router.post("/{message_id}/feedback", response_model=Feedback)
async def give_feedback(
    message_id: MessageId, body: FeedbackIn, store: StoreDep, principal: CurrentKey
) -> Feedback:
    """Rate an answer (again: the latest rating replaces the earlier one)."""
    stored = await store.run(
        store.conversations.set_feedback, message_id, body.score, body.reason, visible_owner(principal)
    )
    if stored is None:
        raise HttpApiError(404, f"message {message_id!r} not found", param="message_id")
    values = asdict(stored)
    return Feedback(id=values["message_id"], score=values["score"], reason=values["reason"])
