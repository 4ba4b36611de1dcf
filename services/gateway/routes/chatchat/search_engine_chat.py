"""Chatchat v0.2's ``POST /chat/search_engine_chat`` over the gateway's search-engine chat.

The request becomes a ``/v1/chat/completions`` request with ``search_engine`` (see
:mod:`services.gateway.chat.web_passages`), so the search, the prompt, citations and
abstention are exactly those of the native route. Frames are Chatchat's: ``{"answer": token}``
then ``{"docs": [...]}`` when streaming, one ``{"answer", "docs"}`` frame without ``stream``;
each doc is Chatchat's source string, ``出处 [n] [title](url)`` and the snippet.

``search_engine_name`` names the provider. Chatchat answers an engine it does not support, or
one it lacks the key for, with a ``code`` 404 envelope (HTTP 200); so does this route, for an
unknown name and for one this gateway is not configured to search with. ``split_result``
(Chatchat's result splitting for its Metaphor engine) and ``prompt_name`` are accepted and
ignored.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from services.gateway.chat.generation import start_generation
from services.gateway.chat.planning import plan_chat
from services.gateway.chat.web_passages import TITLE_KEY, URL_KEY, provider_for
from services.gateway.deps import ClientsDep, CurrentKey, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError
from services.gateway.routes.chatchat.chat import (
    EVENT_STREAM,
    NO_DOCS,
    ChatBody,
    ChatchatConversation,
    completion_request,
    frames,
    storing,
)
from services.gateway.routes.chatchat.envelopes import ERRORS, not_found
from services.gateway.routes.chatchat.knowledge_base import SSE_HEADERS
from zhiku.v1 import common_pb2

router = APIRouter(prefix="/chat", tags=["chatchat"], responses=ERRORS)

# Chatchat's SEARCH_ENGINE_TOP_K.
CHATCHAT_SEARCH_TOP_K = 3


class SearchEngineChatBody(ChatBody):
    search_engine_name: str = Field(
        min_length=1,
        max_length=32,
        examples=["searxng"],
        description="the search provider: searxng, bing, tavily or duckduckgo (the one configured)",
    )
    top_k: int = Field(default=CHATCHAT_SEARCH_TOP_K, ge=1, le=20)
    split_result: bool = False


def _source(index: int, passage: common_pb2.Passage) -> str:
    """Chatchat's citation string: numbered, linked to the page, then the snippet."""
    url = passage.metadata.get(URL_KEY, "")
    title = passage.metadata.get(TITLE_KEY, "") or url
    return f"出处 [{index + 1}] [{title}]({url}) \n\n{passage.text}\n\n"


@router.post("/search_engine_chat", response_model=None, responses=EVENT_STREAM)
async def search_engine_chat(
    body: SearchEngineChatBody,
    clients: ClientsDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: CurrentKey,
) -> StreamingResponse | JSONResponse:
    """Web-search chat: frames ``{"answer": token}`` then ``{"docs": [citation strings]}``
    (one ``{"answer", "docs"}`` frame without ``stream``). An unknown or unconfigured search
    engine is a JSON envelope with ``code`` 404, as in Chatchat; a search engine that fails or
    times out is HTTP 502 / 504 naming it."""
    engine = body.search_engine_name.strip().lower()
    try:
        provider_for(engine, settings)
    except HttpApiError as error:
        refusal = not_found(f"未支持搜索引擎 {body.search_engine_name}: {error.message}")
        return JSONResponse(refusal.model_dump())
    conversation = await ChatchatConversation.open(body, store, principal, settings)
    completion = completion_request(
        body,
        stored=conversation.history if conversation else None,
        search_engine=engine,
        top_k=body.top_k,
    )
    plan = await plan_chat(completion, clients, settings)
    generation = await start_generation(clients, plan, settings.chat_timeout_s)
    docs = [_source(index, passage) for index, passage in enumerate(plan.passages)] or [NO_DOCS]
    return StreamingResponse(
        frames(generation, body.stream, "answer", {"docs": docs}, storing(conversation, body.query)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
