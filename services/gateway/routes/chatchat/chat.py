"""Chatchat v0.2's ``/chat/chat`` and ``/chat/knowledge_base_chat`` over the OpenAI chat path.

Both answer ``text/event-stream`` whether or not ``stream`` is set, as Chatchat does: with
``stream`` one frame per token, without it a single frame holding the whole answer. Requests
are translated into the gateway's own chat request, so retrieval, prompts and generation are
exactly those of ``/v1/chat/completions``. ``model_name`` picks a served model as ``model`` does
there; Chatchat's clients send their own configured LLM's name with every request, so a name
not served here is answered by the default model (a drop-in must not refuse them).
``prompt_name`` is accepted and ignored, and history is passed as chat turns.

``conversation_id`` works as in Chatchat: the turn (question and answer) is stored in that
conversation, created on first use under the id the client chose, and with no ``history`` in
the request the conversation's latest ``history_len`` messages (-1: the gateway's default
number) are sent along. These conversations are the gateway's own, so they also show in
``/v1/conversations`` and the web UI.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import anyio
import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway import submitting
from services.gateway.access import Principal, key_of, visible_owner
from services.gateway.chat.generation import Generation, start_generation
from services.gateway.chat.planning import plan_chat
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.deps import ClientsDep, CurrentKey, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError, rpc_error_body
from services.gateway.names import kb_name_error
from services.gateway.routes.chatchat.envelopes import (
    ERRORS,
    BaseResponse,
    chatchat_threshold,
    forbidden,
    kb_not_found,
    not_found,
    sse_frame,
)
from services.gateway.routes.chatchat.knowledge_base import (
    CHATCHAT_SCORE_THRESHOLD,
    CHATCHAT_TOP_K,
    SSE_HEADERS,
)
from services.gateway.schemas.openai import ChatCompletionRequest, ChatMessageIn
from services.gateway.schemas.refs import CONVERSATION_REF, KB_REF, MODEL_REF
from services.gateway.served_models import served_or_default
from services.gateway.store import GatewayStore
from zhiku.v1 import common_pb2, ingest_pb2

router = APIRouter(prefix="/chat", tags=["chatchat"], responses=ERRORS)

NO_DOCS = "<span style='color:red'>未找到相关文档,该回答为大模型自身能力解答！</span>"
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "SSE frames of JSON objects"}
}


class History(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Annotated[str, Field(examples=["user", "assistant"])]
    content: str


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, max_length=32000, examples=["恼羞成怒"])
    conversation_id: str = Field(default="", json_schema_extra=CONVERSATION_REF)
    history_len: int = -1
    history: list[History] = Field(default_factory=list)
    stream: bool = False
    model_name: str = Field(
        default="",
        description="a model from GET /v1/models; empty or not served here: the default model",
        json_schema_extra=MODEL_REF,
    )
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int | None = Field(default=None, description="None or <= 0: the model's default")
    prompt_name: str = "default"


class KnowledgeBaseChatBody(ChatBody):
    knowledge_base_name: str = Field(examples=["samples"], json_schema_extra=KB_REF)
    top_k: int = Field(default=CHATCHAT_TOP_K, ge=1, le=100)
    score_threshold: float = Field(
        default=CHATCHAT_SCORE_THRESHOLD, ge=0, le=1, description="Chatchat's meaning: 1 = no filtering"
    )


BodyT = TypeVar("BodyT", bound=ChatBody)


async def with_served_model(body: BodyT, clients: ServiceClients, settings: GatewaySettings) -> BodyT:
    """``body`` with ``model_name`` kept when served here, else cleared (the default answers)."""
    model = await served_or_default(clients, body.model_name, settings.request_timeout_s)
    return body if model == body.model_name else body.model_copy(update={"model_name": model})


def completion_request(
    body: ChatBody, knowledge_base: str | None = None, stored: list[History] | None = None, **extra: Any
) -> ChatCompletionRequest:
    """The gateway's chat request; ``stored`` is the conversation's history, used when the
    request brings none of its own."""
    turns = body.history or stored or []
    history = turns if body.history_len < 0 else turns[len(turns) - body.history_len :]
    if body.history_len == 0:
        history = []
    messages = [ChatMessageIn(role=turn.role, content=turn.content) for turn in history]
    messages.append(ChatMessageIn(role="user", content=body.query))
    return ChatCompletionRequest(
        messages=messages,
        model=body.model_name,
        temperature=body.temperature,
        max_tokens=body.max_tokens if body.max_tokens and body.max_tokens > 0 else None,
        knowledge_base=knowledge_base,
        **extra,
    )


_CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")


class ChatchatConversation:
    """A Chatchat ``conversation_id``: its stored history, and where the new turn goes.

    Chatchat's clients choose the id and expect it created on first use. An id that another
    key's conversation holds is answered exactly like an unknown one (a new, empty
    conversation), so no key learns that it exists; the turn is then not stored, because the
    id is taken and the other key's conversation is never written to."""

    def __init__(
        self, store: GatewayStore, conversation_id: str, history: list[History], stored: bool = True
    ) -> None:
        self.store = store
        self.id = conversation_id
        self.history = history
        self.stored = stored
        self.message_id = uuid.uuid4().hex

    @classmethod
    async def open(
        cls, body: ChatBody, store: GatewayStore, principal: Principal | None, settings: GatewaySettings
    ) -> ChatchatConversation | None:
        if not body.conversation_id:
            return None
        conversation_id = body.conversation_id.lower()
        if not _CONVERSATION_ID.fullmatch(conversation_id):
            raise HttpApiError(
                422, "conversation_id must be 32 hex digits (uuid4().hex)", param="conversation_id"
            )
        found = await store.run(store.conversations.get, conversation_id, visible_owner(principal))
        if found is None:
            if await store.run(store.conversations.get, conversation_id, None) is not None:
                return cls(store, conversation_id, [], stored=False)  # someone else's
            title = body.query[:40]
            await store.run(store.conversations.create, title, None, key_of(principal), conversation_id)
            return cls(store, conversation_id, [])
        wanted = settings.conversation_history_messages if body.history_len < 0 else body.history_len
        recent = found.messages[len(found.messages) - wanted :] if wanted else []
        return cls(store, conversation_id, [History(role=m.role, content=m.content) for m in recent])

    async def store_turn(self, question: str, answer: str) -> None:
        if self.stored:
            await self.store.run(
                self.store.conversations.append_turn, self.id, question, answer, self.message_id
            )


async def frames(
    generation: Generation,
    stream: bool,
    key: str,
    tail: dict[str, Any],
    on_answer: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Token frames ``{key: token, ...tail}`` or one whole-answer frame; errors go in-band.
    ``on_answer`` gets the answer once generated, or the part sent when the client left."""
    parts: list[str] = []
    completed = False
    try:
        if stream:
            async for delta in generation.deltas():
                parts.append(delta)
                yield sse_frame({key: delta, **{k: v for k, v in tail.items() if k != "docs"}})
            completed = True
            if on_answer is not None:
                await on_answer("".join(parts))
            if "docs" in tail:
                yield sse_frame({"docs": tail["docs"]})
        else:
            text = "".join([delta async for delta in generation.deltas()])
            completed = True
            if on_answer is not None:
                await on_answer(text)
            yield sse_frame({key: text, **tail})
    except grpc.RpcError as error:
        _, body = rpc_error_body(error)
        yield sse_frame({"code": 500, "msg": body["error"]["message"]})
    finally:
        generation.cancel()
        if on_answer is not None and not completed and parts:
            with anyio.CancelScope(shield=True):  # the request is being cancelled
                await on_answer("".join(parts))


@router.post("/chat", response_class=StreamingResponse, responses=EVENT_STREAM)
async def chat(
    body: ChatBody, clients: ClientsDep, settings: SettingsDep, store: StoreDep, principal: CurrentKey
) -> StreamingResponse:
    """Plain chat: frames ``{"text": token, "message_id": id}``."""
    body = await with_served_model(body, clients, settings)
    conversation = await ChatchatConversation.open(body, store, principal, settings)
    stored = conversation.history if conversation else None
    plan = await plan_chat(completion_request(body, stored=stored), clients, settings)
    generation = await start_generation(clients, plan, settings.chat_timeout_s)
    tail = {"message_id": conversation.message_id if conversation else uuid.uuid4().hex}
    on_answer = storing(conversation, body.query)
    return StreamingResponse(
        frames(generation, body.stream, "text", tail, on_answer),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def storing(
    conversation: ChatchatConversation | None, question: str
) -> Callable[[str], Awaitable[None]] | None:
    if conversation is None:
        return None

    async def store(answer: str) -> None:
        await conversation.store_turn(question, answer)

    return store


def _source(index: int, passage: common_pb2.Passage, base_url: str, kb: str) -> str:
    """Chatchat's citation string: numbered, linked to ``download_doc``, then the passage."""
    query = urlencode({"knowledge_base_name": kb, "file_name": passage.file_name})
    url = f"{base_url}knowledge_base/download_doc?{query}"
    return f"出处 [{index + 1}] [{passage.file_name}]({url}) \n\n{passage.text}\n\n"


@router.post("/knowledge_base_chat", response_model=None, responses=EVENT_STREAM)
async def knowledge_base_chat(
    body: KnowledgeBaseChatBody,
    request: Request,
    clients: ClientsDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: CurrentKey,
) -> StreamingResponse | JSONResponse:
    """Grounded chat: frames ``{"answer": token}`` then ``{"docs": [citation strings]}``
    (one ``{"answer", "docs"}`` frame without ``stream``). An unknown knowledge base is a
    JSON envelope with ``code`` 404, as in Chatchat. ``score_threshold`` has Chatchat's
    meaning (1 = no filtering; hits keep Zhiku score >= 1 - threshold)."""
    kb = body.knowledge_base_name
    problem = kb_name_error(kb)
    if problem is not None:
        return _json(forbidden(problem))
    try:
        await clients.ingest.GetKnowledgeBase(
            ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=settings.request_timeout_s
        )
    except grpc.RpcError as error:
        if submitting.is_not_found(error):
            return _json(not_found(kb_not_found(kb)))
        raise
    body = await with_served_model(body, clients, settings)
    conversation = await ChatchatConversation.open(body, store, principal, settings)
    completion = completion_request(
        body,
        kb,
        stored=conversation.history if conversation else None,
        top_k=body.top_k,
        score_threshold=chatchat_threshold(body.score_threshold),
    )
    plan = await plan_chat(completion, clients, settings)
    generation = await start_generation(clients, plan, settings.chat_timeout_s)
    base_url = str(request.base_url)
    docs = [_source(index, passage, base_url, kb) for index, passage in enumerate(plan.passages)] or [NO_DOCS]
    return StreamingResponse(
        frames(generation, body.stream, "answer", {"docs": docs}, storing(conversation, body.query)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def _json(envelope: BaseResponse) -> JSONResponse:
    return JSONResponse(envelope.model_dump())
