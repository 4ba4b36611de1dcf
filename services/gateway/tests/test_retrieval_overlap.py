"""The knowledge-base lookup overlaps the other round trips of a search, for the search route
and for chat (where a follow-up is made standalone first), with fake service stubs: each fake
call waits until the other one has started, so a sequential path would time out."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.gateway.authz import KnowledgeBaseGuard
from services.gateway.chat.planning import plan_chat
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError
from services.gateway.kb_cache import KnowledgeBaseCache
from services.gateway.retrieval import lookup_and_search
from services.gateway.schemas.openai import ChatCompletionRequest
from zhiku.v1 import common_pb2, embed_pb2, generate_pb2, ingest_pb2, retrieve_pb2

WAIT_S = 5.0


class FakeServices:
    """Stubs of ingest, embed, retrieve and generate recording which calls started."""

    def __init__(self, lookup_error: Exception | None = None) -> None:
        self.lookup_started = asyncio.Event()
        self.lookup_error = lookup_error
        self.searched: list[str] = []
        self.rewrite_started = asyncio.Event()
        self.rewritten = "standalone question"

    def clients(self) -> Any:
        generate = SimpleNamespace(RewriteQuery=self.rewrite)
        return SimpleNamespace(
            ingest=SimpleNamespace(GetKnowledgeBase=self.get_knowledge_base),
            embed=SimpleNamespace(Embed=self.embed),
            retrieve=SimpleNamespace(Search=self.search),
            generate=generate,
            generate_for=lambda model: generate,  # one generate service serves every model
            kb_cache=KnowledgeBaseCache(ttl_s=0),
            guard=KnowledgeBaseGuard(),
        )

    async def get_knowledge_base(self, request: Any, timeout: float) -> Any:
        self.lookup_started.set()
        if self.lookup_error is not None:
            raise self.lookup_error
        return ingest_pb2.KnowledgeBase(name=request.name, chunk_count=1)

    async def embed(self, request: Any, timeout: float) -> embed_pb2.EmbedResponse:
        return embed_pb2.EmbedResponse(vectors=[embed_pb2.Vector(values=[0.5, 0.5])])

    async def search(self, request: retrieve_pb2.SearchRequest, timeout: float) -> Any:
        self.searched.append(request.query_text)
        hit = common_pb2.Passage(chunk_id="c1", text="passage", file_name="a.txt", score=0.9)
        return SimpleNamespace(hits=[hit])

    async def rewrite(self, request: Any, timeout: float) -> generate_pb2.RewriteQueryResponse:
        self.rewrite_started.set()
        await asyncio.wait_for(self.lookup_started.wait(), WAIT_S)  # sequential: never set
        return generate_pb2.RewriteQueryResponse(query=self.rewritten)


async def test_lookup_runs_while_the_query_is_still_being_made() -> None:
    fake = FakeServices()

    async def making() -> str:
        await asyncio.wait_for(fake.lookup_started.wait(), WAIT_S)
        return "made query"

    found, passages = await lookup_and_search(
        fake.clients(), "handbook", [], making(), top_k=3, score_threshold=0.0, timeout_s=1.0
    )
    assert [kb.name for kb in found] == ["handbook"]
    assert fake.searched == ["made query"]
    assert [p.chunk_id for p in passages] == ["c1"]


async def test_a_failure_to_make_the_query_comes_before_the_lookups() -> None:
    fake = FakeServices(lookup_error=RuntimeError("unknown knowledge base"))

    async def failing() -> str:
        await asyncio.wait_for(fake.lookup_started.wait(), WAIT_S)
        await asyncio.sleep(0.01)  # the lookup has failed by now
        raise HttpApiError(422, "no question")

    with pytest.raises(HttpApiError):
        await lookup_and_search(
            fake.clients(), "handbook", [], failing(), top_k=3, score_threshold=0.0, timeout_s=1.0
        )
    assert fake.searched == []


async def test_chat_looks_up_the_knowledge_base_while_the_follow_up_is_rewritten() -> None:
    fake = FakeServices()
    body = ChatCompletionRequest.model_validate(
        {
            "model": "kb:handbook",
            "messages": [
                {"role": "user", "content": "How do I request leave?"},
                {"role": "assistant", "content": "Through the portal."},
                {"role": "user", "content": "And how many days?"},
            ],
        }
    )
    plan = await plan_chat(body, fake.clients(), GatewaySettings())
    assert fake.rewrite_started.is_set()
    assert plan.retrieval_query == "standalone question"
    assert fake.searched == ["standalone question"]
    assert [p.chunk_id for p in plan.passages] == ["c1"]


async def test_chat_without_history_searches_the_question_itself() -> None:
    fake = FakeServices()
    body = ChatCompletionRequest.model_validate(
        {"model": "kb:handbook", "messages": [{"role": "user", "content": "How do I request leave?"}]}
    )
    plan = await plan_chat(body, fake.clients(), GatewaySettings())
    assert not fake.rewrite_started.is_set()
    assert plan.retrieval_query == "How do I request leave?"
    assert fake.searched == ["How do I request leave?"]
