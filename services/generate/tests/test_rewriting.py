"""Follow-up questions made standalone for retrieval: the terms method, and the model's."""

from __future__ import annotations

from services.generate.domain import Turn
from services.generate.rewriting import rewrite_with_terms, stands_alone
from services.generate.tests.conftest import Serve, make_settings
from testing.fake_openai import FakeOpenAI, running
from zhiku.v1 import generate_pb2

from .test_openai_backend import openai_settings

FIRST = "《战国无双3》是由哪两个公司合作开发的？"


def conversation(*turns: tuple[str, str]) -> list[generate_pb2.ChatMessage]:
    return [generate_pb2.ChatMessage(role=role, content=content) for role, content in turns]


def test_a_pronoun_or_a_missing_subject_carries_the_earlier_subject() -> None:
    turns = (Turn("user", FIRST), Turn("assistant", "光荣和ω-force [1]"), Turn("user", "它是哪一年发售的？"))
    query, method = rewrite_with_terms(turns)
    assert method == "terms" and "战国" in query and query.endswith("它是哪一年发售的？")
    omitted = (*turns[:2], Turn("user", "哪一年发售的？"))
    assert rewrite_with_terms(omitted)[1] == "terms"


def test_a_question_with_its_own_subject_or_no_history_is_searched_as_it_is() -> None:
    assert stands_alone("瘰鳞蛇主要以什么为食？")
    turns = (Turn("user", FIRST), Turn("assistant", "光荣和ω-force"), Turn("user", "瘰鳞蛇主要以什么为食？"))
    assert rewrite_with_terms(turns) == ("瘰鳞蛇主要以什么为食？", "none")
    assert rewrite_with_terms((Turn("user", "它是哪一年发售的？"),)) == ("它是哪一年发售的？", "none")


async def test_rewrite_rpc_with_terms_on_the_extractive_backend(serve: Serve) -> None:
    stub = await serve(make_settings(backend="extractive"))
    reply = await stub.RewriteQuery(
        generate_pb2.RewriteQueryRequest(
            messages=conversation(("user", FIRST), ("assistant", "光荣"), ("user", "它是哪一年发售的？"))
        )
    )
    assert reply.method == "terms" and "战国" in reply.query
    off = await serve(make_settings(backend="extractive", query_rewrite="off"))
    plain = await off.RewriteQuery(
        generate_pb2.RewriteQueryRequest(
            messages=conversation(("user", FIRST), ("user", "它是哪一年发售的？"))
        )
    )
    assert (plain.query, plain.method) == ("它是哪一年发售的？", "none")


async def test_rewrite_rpc_asks_a_real_model_and_falls_back_when_it_rambles(serve: Serve) -> None:
    condensed = ["《战国无双3》", "是哪一年", "发售的？"]
    async with running(FakeOpenAI(condensed)) as fake:
        stub = await serve(openai_settings(fake.base_url))  # query_rewrite auto: llm for openai
        messages = conversation(("user", FIRST), ("assistant", "光荣"), ("user", "它是哪一年发售的？"))
        reply = await stub.RewriteQuery(generate_pb2.RewriteQueryRequest(messages=messages))
        assert (reply.query, reply.method) == ("《战国无双3》是哪一年发售的？", "llm")
        prompt = fake.calls[-1].body["messages"][-1]["content"]
        assert "改写" in prompt and FIRST in prompt and prompt.endswith("它是哪一年发售的？")
    async with running(FakeOpenAI(["word "] * 200)) as rambling:
        stub = await serve(openai_settings(rambling.base_url))
        reply = await stub.RewriteQuery(generate_pb2.RewriteQueryRequest(messages=messages))
        assert reply.method == "terms" and "战国" in reply.query
