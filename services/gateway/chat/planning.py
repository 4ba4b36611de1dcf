"""Planning a chat turn: everything decided before generation starts.

Resolve the target (a knowledge base or none, and the model), convert the messages, and for
knowledge-base chat make a follow-up standalone and retrieve its passages; the passages go to
the generate service with ``grounded=True`` and come back to the client as ``citations``.
Errors up to here are plain HTTP errors (nothing has been streamed yet).

Search-engine chat (``search_engine``) is the same with a web search in place of retrieval
(:mod:`web_passages`): the results are the passages, the pages are the citations.

A request with tools is plain chat with the model unless it names a knowledge base too; then
the passages go to the generate service as usual and it puts them in the system message,
while the conversation and the tools reach the model as sent (``tool_support``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.gateway.chat.parents import one_per_parent, prompt_passages
from services.gateway.chat.tool_support import ensure_tool_support, options_fields, tool_fields
from services.gateway.chat.web_passages import (
    as_passages,
    provider_for,
    requested_engine,
    search_web,
    web_citation,
)
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError
from services.gateway.retrieval import citation, lookup_and_search, options_of
from services.gateway.schemas.native import MAX_QUERY_CHARS
from services.gateway.schemas.openai import ChatCompletionRequest, ChatMessageIn
from zhiku.v1 import common_pb2, generate_pb2

if TYPE_CHECKING:
    from services.gateway.chat.generation import Generation

# Roles the generate service understands; "developer" is OpenAI's newer name for "system".
_ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def _pb_messages(messages: list[ChatMessageIn]) -> list[generate_pb2.ChatMessage]:
    converted = []
    for message in messages:
        role = _ROLE_ALIASES.get(message.role)
        if role is None:
            raise HttpApiError(422, f"unsupported message role {message.role!r}", param="messages")
        converted.append(generate_pb2.ChatMessage(role=role, content=message.text(), **tool_fields(message)))
    return converted


def _dialogue(messages: list[generate_pb2.ChatMessage]) -> list[generate_pb2.ChatMessage]:
    """The conversation up to its last user question, without tool turns: what a follow-up is
    made standalone from (a tool result is not a question)."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    return [m for m in messages[: last_user + 1] if m.role != "tool" and not m.tool_calls]


def _last_user_text(messages: list[generate_pb2.ChatMessage]) -> str:
    """The question to search with; one too long to search is refused in the gateway's terms
    (the embed service would refuse it in its own)."""
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            if len(message.content) > MAX_QUERY_CHARS:
                raise HttpApiError(
                    422,
                    f"the question is too long to search the knowledge base: {len(message.content):,} "
                    f"characters, at most {MAX_QUERY_CHARS:,}; ask a shorter question, or send long "
                    "text without a knowledge base",
                    param="messages",
                )
            return message.content
    raise HttpApiError(422, "knowledge-base chat needs a non-empty user message", param="messages")


@dataclass
class ChatPlan:
    """Everything decided before generation starts; errors up to here are plain HTTP errors."""

    request: generate_pb2.GenerateRequest
    knowledge_base: str | None
    passages: list[common_pb2.Passage] = field(default_factory=list)
    retrieval_query: str = ""
    search_engine: str | None = None  # the provider searched, for search-engine chat

    @property
    def grounded(self) -> bool:
        """Answered from passages: a knowledge base's or a web search's."""
        return self.knowledge_base is not None or self.search_engine is not None

    def citations(self, grounding: generate_pb2.Grounding | None = None) -> list[dict[str, object]]:
        """The passages as citations, numbered as the answer cites them; with the answer's
        ``grounding``, each says whether the answer cites it and whether it backs what it says."""
        kb = self.knowledge_base or ""
        checked = {p.number: p for p in grounding.passages} if grounding is not None else {}
        found = []
        for number, passage in enumerate(self.passages, start=1):
            if self.search_engine is not None:
                source = web_citation(passage)
            else:
                source = citation(passage.knowledge_base or kb, passage)
            entry = {**source, "index": number}
            if grounding is not None:
                check = checked.get(number)
                entry["cited"] = bool(check and check.cited)
                entry["supported"] = bool(check and check.supported)
            found.append(entry)
        return found

    def grounded_fields(self, generation: Generation) -> dict[str, Any]:
        """What a knowledge-base answer adds to the response: whether it abstained, what was
        searched, and (once the answer is complete) its checked citations and unsupported sentences."""
        if not self.grounded:
            return {}
        fields: dict[str, Any] = {"abstained": generation.abstained, "retrieval_query": self.retrieval_query}
        if self.search_engine is not None:
            fields["search_engine"] = self.search_engine
        # An abstention states nothing from the passages: none is cited, none backs anything.
        grounding = generate_pb2.Grounding() if generation.abstained else generation.grounding
        if grounding is not None:
            fields["citations"] = self.citations(grounding)
            fields["unsupported"] = [
                {"text": u.text, "start": u.start, "end": u.end} for u in grounding.unsupported
            ]
        return fields

    def stored_grounding(self, generation: Generation) -> dict[str, Any]:
        """What a stored answer keeps of :meth:`grounded_fields` beside its citations."""
        return {k: v for k, v in self.grounded_fields(generation).items() if k != "citations"}


def _is_follow_up(messages: list[generate_pb2.ChatMessage]) -> bool:
    """Whether there is earlier conversation to draw on (a follow-up alone finds nothing useful)."""
    return any(m.role == "user" for m in messages[:-1])


async def standalone_query(
    clients: ServiceClients,
    messages: list[generate_pb2.ChatMessage],
    question: str,
    timeout_s: float,
    model: str = "",
) -> str:
    """The last ``question`` made standalone from the conversation by ``model`` (empty: the
    generate service's rewrite model)."""
    reply = await clients.generate_for(model).RewriteQuery(
        generate_pb2.RewriteQueryRequest(messages=messages, model=model), timeout=timeout_s
    )
    return reply.query[:MAX_QUERY_CHARS] or question


async def plan_chat(
    body: ChatCompletionRequest, clients: ServiceClients, settings: GatewaySettings
) -> ChatPlan:
    """Resolve the target, retrieve passages for knowledge-base chat, build the request."""
    kb_name, model = body.target()
    messages = _pb_messages(body.messages)
    await ensure_tool_support(clients, body, model, settings.request_timeout_s)
    passages: list[common_pb2.Passage] = []
    query = ""
    engine = requested_engine(body.search_engine)
    provider = provider_for(engine, settings) if engine is not None else None
    if provider is not None:
        question = _last_user_text(messages)  # refused (422) before any call
        dialogue = _dialogue(messages)
        query = question
        if body.rewrite and _is_follow_up(dialogue):
            query = await standalone_query(
                clients, dialogue, question, settings.request_timeout_s, settings.rewrite_model
            )
        count = body.top_k or settings.agent_search_max_results
        results = await search_web(provider, query, count, settings.agent_tool_timeout_s)
        passages = as_passages(results, provider.name)
    elif kb_name is not None:
        question = _last_user_text(messages)  # refused (422) before any call
        # A follow-up is made standalone (a round trip to the generate service) while the
        # knowledge bases are looked up: the search route's overlap, one step earlier.
        dialogue = _dialogue(messages)
        rewriting = (
            asyncio.ensure_future(
                standalone_query(
                    clients, dialogue, question, settings.request_timeout_s, settings.rewrite_model
                )
            )
            if body.rewrite and _is_follow_up(dialogue)
            else None
        )
        _, passages = await lookup_and_search(
            clients,
            kb_name,
            body.knowledge_bases,
            question if rewriting is None else rewriting,
            top_k=body.top_k or settings.default_top_k,
            score_threshold=body.score_threshold or 0.0,
            timeout_s=settings.request_timeout_s,
            options=options_of(body),
        )
        query = question if rewriting is None else rewriting.result()
        passages = one_per_parent(passages)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    request = generate_pb2.GenerateRequest(
        messages=messages,
        passages=prompt_passages(passages),
        grounded=kb_name is not None or provider is not None,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        model=model,
        **options_fields(body),
    )
    return ChatPlan(
        request=request,
        knowledge_base=kb_name,
        passages=passages,
        retrieval_query=query,
        search_engine=provider.name if provider is not None else None,
    )
