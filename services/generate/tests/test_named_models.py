"""Several named models in one generate service, over real gRPC: two ``openai`` models, each on
its own OpenAI-protocol server, beside the extractive default; the settings that configure them."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from services.generate.tests.conftest import Serve, ask, collect, make_settings
from testing.fake_openai import FakeOpenAI, running
from zhiku.v1 import generate_pb2

HISTORY = (("user", "Who founded the Hanseatic League?"), ("assistant", "Merchants of Lübeck [1]."))


def openai_entry(base_url: str, upstream_model: str, **extra: object) -> dict[str, object]:
    return {
        "backend": "openai",
        "openai_base_url": base_url,
        "openai_api_key": "test-key",
        "openai_model": upstream_model,
        "openai_max_retries": 0,
        "openai_context_window": 4096,
        **extra,
    }


def test_named_models_take_their_entry_over_the_top_level_settings() -> None:
    settings = make_settings(
        backend="extractive",
        temperature_default=0.1,
        history_turns=2,
        models={
            "answers": openai_entry("http://127.0.0.1:9/v1", "qwen", temperature_default=0.7),
            "fast": {"BACKEND": "extractive"},  # keys in either case, as in the environment
        },
    )
    answers, fast = settings.named_models["answers"], settings.named_models["fast"]
    assert (answers.served_model_name, answers.backend, answers.openai_model) == ("answers", "openai", "qwen")
    assert answers.temperature_default == 0.7  # its own
    assert answers.history_turns == 2  # inherited from the top level
    assert answers.max_concurrency == 256  # derived for its own backend, not the default's 16
    assert fast.served_model_name == "fast" and fast.temperature_default == 0.1
    assert answers.named_models == {}


def test_models_from_json_in_the_environment_and_from_a_yaml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZHIKU_GENERATE_MODELS", json.dumps({"fast": {"backend": "extractive"}}))
    monkeypatch.setenv("ZHIKU_GENERATE_HISTORY_TURNS", "1")
    from_env = make_settings()
    assert list(from_env.named_models) == ["fast"]
    assert from_env.named_models["fast"].history_turns == 1

    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        "qwen:\n  backend: openai\n  openai_model: Qwen2.5-7B-Instruct\n  openai_base_url: http://vllm:8000/v1\n"
        "tiny:\n  backend: extractive\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("ZHIKU_GENERATE_MODELS", str(models_file))
    from_file = make_settings(rewrite_model="tiny")
    assert list(from_file.named_models) == ["qwen", "tiny"]
    assert from_file.named_models["qwen"].openai_base_url == "http://vllm:8000/v1"


@pytest.mark.parametrize(
    ("models", "fragment"),
    [
        ({"answers": {"backend": "openai"}}, "ZHIKU_GENERATE_MODELS['answers']: backend openai needs"),
        ({"answers": {"backend": "gpt"}}, "ZHIKU_GENERATE_MODELS['answers']: backend"),
        ({"answers": {"grpc_port": 1}}, "unknown or service-wide settings grpc_port"),
        ({"answers": {"openai_modle": "x"}}, "unknown or service-wide settings openai_modle"),
        ({"kb:docs": {"backend": "extractive"}}, "ZHIKU_GENERATE_MODELS['kb:docs']: a model name"),
        ({"default": {"backend": "extractive"}}, "neither 'default'"),
        ({"a b": {"backend": "extractive"}}, "a model name"),
        ("{not json", "is not valid JSON"),
        ("/nonexistent/models.yaml", "neither a JSON object nor the path of a file"),
    ],
)
def test_bad_models_fail_at_start_up_naming_the_entry(models: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(models=models)
    assert fragment in str(raised.value)


async def test_a_name_taken_by_the_default_model_or_an_unknown_rewrite_model_fails_at_start(
    serve: Serve,
) -> None:
    with pytest.raises(ValueError, match="the default model's own name"):
        await serve(make_settings(models={"extractive": {"backend": "extractive"}}))
    with pytest.raises(ValueError, match="ZHIKU_GENERATE_REWRITE_MODEL 'tiny' is not served here"):
        await serve(make_settings(models={"fast": {"backend": "extractive"}}, rewrite_model="tiny"))


async def test_two_named_models_each_answer_what_names_them(serve: Serve) -> None:
    async with (
        running(FakeOpenAI(["From ", "Qwen."], model="qwen-upstream")) as big,
        running(FakeOpenAI(["From ", "tiny."], model="tiny-upstream")) as small,
    ):
        stub = await serve(
            make_settings(
                backend="extractive",
                models={
                    "qwen": openai_entry(big.base_url, "Qwen2.5-7B-Instruct", openai_context_window=32768),
                    "tiny": openai_entry(small.base_url, "Qwen2.5-0.5B-Instruct"),
                },
            )
        )
        listed = await stub.ListModels(generate_pb2.ListModelsRequest())
        assert [(m.id, m.backend, m.context_window) for m in listed.models] == [
            ("extractive", "extractive", listed.models[0].context_window),
            ("qwen", "openai", 32768),
            ("tiny", "openai", 4096),
        ]

        qwen_deltas, _ = await collect(stub.Generate(ask("Hello?", model="qwen")))
        tiny_deltas, _ = await collect(stub.Generate(ask("Hello?", model="tiny")))
        await collect(stub.Generate(ask("Hello?")))  # the default: extractive, no upstream call
        await collect(stub.Generate(ask("Hello?", model="default")))
        assert "".join(qwen_deltas) == "From Qwen." and "".join(tiny_deltas) == "From tiny."
        assert [call.body["model"] for call in big.calls] == ["Qwen2.5-7B-Instruct"]
        assert [call.body["model"] for call in small.calls] == ["Qwen2.5-0.5B-Instruct"]

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await collect(stub.Generate(ask("Hello?", model="gpt-4o")))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'gpt-4o' is not served here; available: extractive, qwen, tiny" in str(
            unknown.value.details()
        )
        assert len(big.calls) == len(small.calls) == 1


async def test_the_rewrite_model_setting_sends_follow_ups_to_the_named_model(serve: Serve) -> None:
    follow_up = ask("When was it founded?", history=HISTORY)
    rewrite = generate_pb2.RewriteQueryRequest(messages=follow_up.messages)
    async with (
        running(FakeOpenAI(["Answer."])) as big,
        running(FakeOpenAI(["When ", "was ", "the ", "Hanseatic ", "League ", "founded?"])) as small,
    ):
        stub = await serve(
            make_settings(
                backend="extractive",
                models={
                    "qwen": openai_entry(big.base_url, "big"),
                    "tiny": openai_entry(small.base_url, "small"),
                },
                rewrite_model="tiny",
            )
        )
        reply = await stub.RewriteQuery(rewrite)
        assert (reply.query, reply.method) == ("When was the Hanseatic League founded?", "llm")
        assert len(small.calls) == 1 and big.calls == []
        assert "Last question: When was it founded?" in small.calls[0].body["messages"][-1]["content"]

        # A call naming its model is rewritten by that one; an unknown one is NOT_FOUND.
        named = await stub.RewriteQuery(
            generate_pb2.RewriteQueryRequest(messages=follow_up.messages, model="qwen")
        )
        assert named.method == "llm" and len(big.calls) == 1
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.RewriteQuery(
                generate_pb2.RewriteQueryRequest(messages=follow_up.messages, model="nope")
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_without_a_rewrite_model_the_default_model_rewrites(serve: Serve) -> None:
    async with running(FakeOpenAI(["Should ", "not ", "be ", "asked."])) as big:
        stub = await serve(
            make_settings(backend="extractive", models={"qwen": openai_entry(big.base_url, "big")})
        )
        follow_up = ask("When was it founded?", history=HISTORY)
        reply = await stub.RewriteQuery(generate_pb2.RewriteQueryRequest(messages=follow_up.messages))
        assert reply.method in ("terms", "none")  # the extractive default has no model to ask
        assert big.calls == []
