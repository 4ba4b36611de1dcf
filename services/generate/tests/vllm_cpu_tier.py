"""The vllm backend through vLLM's real engine on the CPU (``make test-vllm``, venv .venv-vllm).

No weights can be downloaded, so the model is a tiny Llama written here with
``load_format="dummy"`` (random weights: the text is meaningless) and a byte-level BPE
tokenizer trained here with the ``tokenizers`` library on the bundled prompt templates. Every
behaviour under test is vLLM's own: the AsyncLLM engine, its scheduler and continuous batching,
its detokenizer and usage counts, its chat template rendering and its abort path.

The file name does not match ``test_*.py`` on purpose: the default ``make test`` venv has no
vLLM, so only ``make test-vllm`` names this file (pytest collects files named explicitly).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.common.grpc_server import GrpcService
from services.generate.backends.vllm_engine import VllmBackend
from services.generate.domain import GenerationRequest
from services.generate.generator import Generator
from services.generate.prompting import PromptTemplates
from services.generate.server import build_spec
from services.generate.tests.conftest import ask, collect, make_settings
from zhiku.v1 import generate_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")

WINDOW = 512
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<s>", "<|system|>", "<|user|>", "<|assistant|>"]


def write_tiny_llama(folder: Path) -> Path:
    """A two-layer Llama config plus a real tokenizer; vLLM fills the weights with noise."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    prompts = importlib.resources.files("services.generate.prompts")
    corpus = [p.read_text(encoding="utf-8") for p in prompts.iterdir() if p.name.endswith(".txt")]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus * 4, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "model_max_length": WINDOW,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,  # head_dim 64: vLLM's CPU attention kernels need 32/64/80/...
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "vocab_size": tokenizer.get_vocab_size(),
        "max_position_embeddings": WINDOW,
        "rms_norm_eps": 1e-6,
        "torch_dtype": "float32",
        "bos_token_id": 0,
        # No end-of-sequence token: random weights would otherwise stop at random points.
        "eos_token_id": None,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


class Served:
    def __init__(
        self,
        stub: generate_pb2_grpc.GenerateServiceStub,
        backend: VllmBackend,
        port: int,
        generator: Generator,
    ) -> None:
        self.stub = stub
        self.backend = backend
        self.port = port
        self.generator = generator


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache; the default is 4
    model = write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    settings = make_settings(
        backend="vllm",
        vllm_model=str(model),
        served_model_name="tiny-llama",
        vllm_max_model_len=WINDOW,
        vllm_dtype="float32",
        vllm_max_num_seqs=16,
        vllm_extra_args={"load_format": "dummy", "enforce_eager": True},
        temperature_default=0.0,
    )
    backend = VllmBackend(settings)
    service = GrpcService(build_spec(settings, backend), settings)
    await service.start()  # returns after backend.start(): the engine is loaded
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        generator = Generator(settings, backend, PromptTemplates.load())
        yield Served(generate_pb2_grpc.GenerateServiceStub(channel), backend, service.port, generator)
    finally:
        await channel.close()
        await service.stop()


async def test_serving_only_with_a_loaded_engine(served: Served) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert served.backend.engine is not None
    assert served.backend.context_window == WINDOW


async def test_streams_with_vllm_usage_and_metrics(served: Served) -> None:
    before = REGISTRY.get_sample_value("zhiku_generate_ttft_seconds_count", {"backend": "vllm"}) or 0.0
    request = ask("Where are files kept?", max_tokens=24)
    deltas, final = await collect(served.stub.Generate(request))
    assert len(deltas) >= 2  # streamed in pieces, not one blob
    assert final.finish_reason == "length"
    assert final.usage.completion_tokens == 24  # vLLM's count of generated token ids
    # vLLM's own prompt count equals the model tokenizer's count of the chat-template rendering
    # of system + question, so the engine got exactly the templated prompt.
    prompt, _ = served.generator.prepare(GenerationRequest.from_pb(request))
    assert [m.role for m in prompt.messages] == ["system", "user"]
    assert final.usage.prompt_tokens == prompt.prompt_tokens
    rendered = served.backend._render(prompt.messages)
    assert rendered.startswith("<|system|>") and rendered.endswith("<|assistant|>")
    after = REGISTRY.get_sample_value("zhiku_generate_ttft_seconds_count", {"backend": "vllm"})
    assert after == before + 1


async def test_concurrent_streams_share_engine_steps(served: Served) -> None:
    """Eight streams are eight engine requests in flight together (continuous batching)."""
    engine = served.backend.engine
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, engine.get_num_unfinished_requests())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(
            *(collect(served.stub.Generate(ask(f"Question {i}?", max_tokens=64))) for i in range(8))
        )
    finally:
        watcher.cancel()
    assert [final.usage.completion_tokens for _, final in results] == [64] * 8
    assert all(final.finish_reason == "length" for _, final in results)
    assert peak >= 4, f"at most {peak} requests were in the engine at once"
    assert engine.get_num_unfinished_requests() == 0


async def test_cancelled_stream_aborts_its_engine_request(served: Served) -> None:
    backend = served.backend
    aborted_before = backend.aborted
    call = served.stub.Generate(ask("Tell me everything", max_tokens=400))
    received = 0
    async for message in call:
        if message.delta:
            received += 1
        if received == 3:
            break
    call.cancel()
    deadline = time.monotonic() + 30  # hang guard, not a timing assertion
    while backend.aborted == aborted_before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert backend.aborted == aborted_before + 1
    assert backend.last_abort.completion_tokens < 400  # stopped midway, not run to the end
    while backend.engine.get_num_unfinished_requests() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert backend.engine.get_num_unfinished_requests() == 0
    # The engine keeps serving.
    _, final = await collect(served.stub.Generate(ask("Still there?", max_tokens=4)))
    assert final.usage.completion_tokens == 4
