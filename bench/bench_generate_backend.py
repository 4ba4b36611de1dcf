"""One generate backend alone: TTFT and token throughput over real gRPC, printed, never pass/fail.

    make bench-generate-backend ARGS="--backend llamacpp --requests 6 --concurrency 2"
    python -m bench.bench_generate_backend --backend llamacpp --requests 6 --concurrency 2

The service runs in-process on a free port with the chosen backend (settings from the
environment as usual, ZHIKU_GENERATE_*), and each request is a knowledge-base question with
three passages, the shape the gateway sends.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

import grpc

from services.common.grpc_server import GrpcService
from services.generate.config import GenerateSettings
from services.generate.server import build_spec
from zhiku.v1 import common_pb2, generate_pb2, generate_pb2_grpc

PASSAGES = [
    ("shipping.md", "Orders ship from our warehouse in Berlin. Shipping takes five business days in Europe."),
    ("refunds.md", "Refunds are issued within 30 days of purchase. Contact support to start a refund."),
    ("support.md", "Support answers e-mails on weekdays between 9:00 and 17:00 Central European Time."),
]
QUESTIONS = [
    "How long does shipping take in Europe?",
    "When are refunds issued?",
    "When does support answer e-mails?",
]


@dataclass
class Sample:
    ttft_s: float
    total_s: float
    completion_tokens: int
    prompt_tokens: int


def request(question: str, max_tokens: int) -> generate_pb2.GenerateRequest:
    return generate_pb2.GenerateRequest(
        messages=[generate_pb2.ChatMessage(role="user", content=question)],
        passages=[common_pb2.Passage(file_name=name, text=text) for name, text in PASSAGES],
        grounded=True,
        temperature=0.0,
        max_tokens=max_tokens,
    )


async def one(stub: generate_pb2_grpc.GenerateServiceStub, question: str, max_tokens: int) -> Sample:
    started = time.perf_counter()
    ttft = 0.0
    async for message in stub.Generate(request(question, max_tokens), timeout=600):
        if message.delta and not ttft:
            ttft = time.perf_counter() - started
        if message.finish_reason:
            usage = message.usage
            return Sample(ttft, time.perf_counter() - started, usage.completion_tokens, usage.prompt_tokens)
    raise RuntimeError("stream ended without a final message")


async def run(args: argparse.Namespace) -> None:
    settings = GenerateSettings(backend=args.backend, grpc_host="127.0.0.1", grpc_port=0, metrics_port=0)
    service = GrpcService(build_spec(settings), settings)
    loaded = time.perf_counter()
    await service.start()
    print(f"backend={args.backend} start (model load) {time.perf_counter() - loaded:.2f}s")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            await one(stub, QUESTIONS[0], 4)  # warm-up
            gate = asyncio.Semaphore(args.concurrency)

            async def gated(index: int) -> Sample:
                async with gate:
                    return await one(stub, QUESTIONS[index % len(QUESTIONS)], args.max_tokens)

            wall = time.perf_counter()
            samples = await asyncio.gather(*(gated(i) for i in range(args.requests)))
            wall = time.perf_counter() - wall
    finally:
        await service.stop()
    ttfts = sorted(s.ttft_s for s in samples)
    decode = [
        (s.completion_tokens - 1) / (s.total_s - s.ttft_s)
        for s in samples
        if s.completion_tokens > 1 and s.total_s > s.ttft_s
    ]
    out_tokens = sum(s.completion_tokens for s in samples)
    print(
        f"requests={args.requests} concurrency={args.concurrency} max_tokens={args.max_tokens} "
        f"prompt_tokens~{statistics.mean(s.prompt_tokens for s in samples):.0f}"
    )
    print(f"TTFT p50 {statistics.median(ttfts):.3f}s  max {ttfts[-1]:.3f}s")
    if decode:
        print(f"decode per stream {statistics.mean(decode):.1f} tok/s")
    print(f"aggregate {out_tokens / wall:.1f} completion tok/s over {wall:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="llamacpp", choices=["llamacpp", "extractive", "openai", "vllm"])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
