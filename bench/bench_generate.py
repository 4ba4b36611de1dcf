"""``make bench-generate``: streamed chat through the whole Zhiku path vs the model server alone.

One run starts the OpenAI-protocol test server as its own process (fixed time to first token
and token rate, like a GPU server under light load), then the gateway and the generate service
(openai backend pointed at that server) as real processes. For N = 1, 8, 32, 64 concurrent
streamed chats it measures, as the client sees them, time to first token p50/p99 and tokens/s,
once through the gateway and once talking to the test server directly, rounds interleaved so
both see the same machine load. Printed as a table, also written to bench/results/generate.json.

Two arrival patterns, each its own table:

* ``burst``: all N requests sent in the same instant, N at a time (the worst case for time to
  first token: every request's set-up queues behind the others' on the same cores);
* ``staggered``: N clients each asking several chats back to back, client i starting i/N of one
  answer's duration after the first, so N streams stay in flight while requests arrive spread
  out, as users' do (closed-loop concurrency, as serving benchmarks define it).

    python -m bench.bench_generate [--ttft-ms 100] [--tokens-per-s 50] [--tokens 64] [--levels 1,8,32,64]
                                   [--arrivals burst,staggered]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from launcher.stack import free_port
from testing.generation_stack import generation_stack

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
ARRIVALS = ("burst", "staggered")
# Rounds per arrival pattern, level and target (after one warm-up burst per level and target).
ROUNDS = {"burst": {1: 12, 8: 4, 32: 3, 64: 3}, "staggered": {1: 4, 8: 2, 32: 2, 64: 2}}
CHATS_PER_CLIENT = 3  # staggered: chats each client asks back to back
QUESTION = "How long does shipping take in Europe, and who pays for returns?"


@dataclass
class Stream:
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    error: str = ""


@dataclass
class Level:
    streams: list[Stream] = field(default_factory=list)
    wall_s: float = 0.0  # summed over rounds

    def ok(self) -> list[Stream]:
        return [s for s in self.streams if not s.error]

    def errors(self) -> int:
        return len(self.streams) - len(self.ok())

    def ttft_ms(self, q: float) -> float:
        values = sorted(s.ttft_s * 1000 for s in self.ok())
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    def stream_tokens_per_s(self) -> float:
        """Mean per-stream rate: tokens over the stream's whole duration (TTFT included)."""
        rates = [s.tokens / s.total_s for s in self.ok() if s.total_s > 0]
        return statistics.fmean(rates) if rates else float("nan")

    def aggregate_tokens_per_s(self) -> float:
        return sum(s.tokens for s in self.ok()) / self.wall_s if self.wall_s else float("nan")


async def one_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str], expected: int) -> Stream:
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": expected,
    }
    result = Stream()
    started = time.perf_counter()
    done = False
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    result.error = str(event["error"])[:200]
                    return result
                for choice in event.get("choices", []):
                    if choice["delta"].get("content") and not result.ttft_s:
                        result.ttft_s = time.perf_counter() - started
                if event.get("usage"):  # tokens as counted by the server (deltas may carry several)
                    result.tokens = int(event["usage"]["completion_tokens"])
    except httpx.HTTPError as error:
        result.error = f"{type(error).__name__}: {error}"
        return result
    result.total_s = time.perf_counter() - started
    if not done:
        result.error = "stream ended without [DONE]"
    elif result.tokens != expected:
        result.error = f"{result.tokens} tokens, expected {expected}"
    return result


async def run_round(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int, expected: int, level: Level | None
) -> None:
    started = time.perf_counter()
    streams = await asyncio.gather(*(one_stream(client, url, headers, expected) for _ in range(n)))
    if level is not None:
        level.streams.extend(streams)
        level.wall_s += time.perf_counter() - started


async def run_staggered(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    n: int,
    expected: int,
    level: Level,
    answer_s: float,
) -> None:
    """N clients asking ``CHATS_PER_CLIENT`` chats each, starts spread over one answer's duration."""

    async def client_loop(i: int) -> list[Stream]:
        await asyncio.sleep(i * answer_s / n)
        return [await one_stream(client, url, headers, expected) for _ in range(CHATS_PER_CLIENT)]

    started = time.perf_counter()
    for streams in await asyncio.gather(*(client_loop(i) for i in range(n))):
        level.streams.extend(streams)
    level.wall_s += time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to show where the cost lies."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    targets: dict[str, tuple[str, dict[str, str]]],
    levels: list[int],
    arrivals: list[str],
    args: argparse.Namespace,
    pids: dict[str, int],
) -> tuple[dict[str, dict[int, dict[str, Level]]], dict[str, float]]:
    """Per arrival pattern and level: a warm-up burst per target, then interleaved rounds.
    Also the CPU seconds each process spent on the zhiku rounds (test server, generate,
    gateway, client) per 1,000 tokens."""
    expected = args.tokens
    answer_s = args.ttft_ms / 1000 + expected / args.tokens_per_s
    results: dict[str, dict[int, dict[str, Level]]] = {pattern: {} for pattern in arrivals}
    cpu: dict[str, float] = dict.fromkeys(pids, 0.0)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for pattern in arrivals:  # one pattern's levels after the other: each table as if run alone
            for n in levels:
                for url, headers in targets.values():  # warm-up: connections, caches
                    await run_round(client, url, headers, n, expected, None)
                by_target = results[pattern][n] = {name: Level() for name in targets}
                for _ in range(ROUNDS[pattern].get(n, 2)):
                    for name, (url, headers) in targets.items():
                        before = {k: cpu_seconds(pid) for k, pid in pids.items()}
                        if pattern == "burst":
                            await run_round(client, url, headers, n, expected, by_target[name])
                        else:
                            await run_staggered(client, url, headers, n, expected, by_target[name], answer_s)
                        if name == "zhiku":
                            for k, pid in pids.items():
                                cpu[k] += cpu_seconds(pid) - before[k]
                print(f"  {pattern} N={n} done", flush=True)
    tokens = sum(len(by["zhiku"].ok()) * expected for levels_ in results.values() for by in levels_.values())
    return results, {k: 1e6 * v / tokens for k, v in cpu.items()} if tokens else {}


def wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the OpenAI-protocol test server exited")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the OpenAI-protocol test server did not start")


def report(
    results: dict[int, dict[str, Level]], args: argparse.Namespace, pattern: str
) -> list[dict[str, float]]:
    print(
        f"\n{pattern} arrivals: streamed chat, {args.tokens} tokens per answer, test server TTFT "
        f"{args.ttft_ms:g} ms, {args.tokens_per_s:g} tokens/s per stream\n"
    )
    header = (
        "| N | path | TTFT p50 ms | TTFT p99 ms | tokens/s per stream | tokens/s total | errors |\n"
        "|---|---|---|---|---|---|---|"
    )
    print(header)
    rows: list[dict[str, float]] = []
    for n, by_target in results.items():
        for name, level in by_target.items():
            print(
                f"| {n} | {name} | {level.ttft_ms(0.5):.1f} | {level.ttft_ms(0.99):.1f} | "
                f"{level.stream_tokens_per_s():.1f} | {level.aggregate_tokens_per_s():.0f} | "
                f"{level.errors()} of {len(level.streams)} |"
            )
        zhiku, direct = by_target["zhiku"], by_target["direct"]
        rows.append(
            {
                "n": n,
                "ttft_p50_overhead_ms": zhiku.ttft_ms(0.5) - direct.ttft_ms(0.5),
                "ttft_p99_overhead_ms": zhiku.ttft_ms(0.99) - direct.ttft_ms(0.99),
                "stream_tokens_per_s_loss_pct": 100
                * (1 - zhiku.stream_tokens_per_s() / direct.stream_tokens_per_s()),
                "total_tokens_per_s_loss_pct": 100
                * (1 - zhiku.aggregate_tokens_per_s() / direct.aggregate_tokens_per_s()),
                "errors_zhiku": zhiku.errors(),
                "errors_direct": direct.errors(),
            }
        )
    print("\n| N | TTFT p50 overhead ms | TTFT p99 overhead ms | tokens/s loss per stream | errors (zhiku) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['n']} | {row['ttft_p50_overhead_ms']:+.1f} | {row['ttft_p99_overhead_ms']:+.1f} | "
            f"{row['stream_tokens_per_s_loss_pct']:+.2f}% | {row['errors_zhiku']} |"
        )
    print(f"\n({pattern} arrivals) targets: TTFT p50 overhead < 10 ms, tokens/s loss < 3%, zero errors at 64")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--arrivals", default=",".join(ARRIVALS), help="burst, staggered or both")
    args = parser.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",")]
    arrivals = [pattern for pattern in args.arrivals.split(",") if pattern]
    if unknown := set(arrivals) - set(ARRIVALS):
        parser.error(f"unknown arrival pattern(s): {', '.join(sorted(unknown))}")

    port = free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testing.fake_openai",
            "--port",
            str(port),
            "--ttft-ms",
            str(args.ttft_ms),
            "--tokens-per-s",
            str(args.tokens_per_s),
            "--tokens",
            str(args.tokens),
        ],
        cwd=REPO,
        start_new_session=True,
    )
    upstream = f"http://127.0.0.1:{port}/v1"
    try:
        wait_port(port, fake)
        with tempfile.TemporaryDirectory(prefix="zhiku-bench-generate-") as tmp:
            log_dir = REPO / "test-output" / "bench-generate"
            with generation_stack(upstream, Path(tmp), log_dir, ZHIKU_LOG_LEVEL="WARNING") as stack:
                targets = {
                    "direct": (f"{upstream}/chat/completions", {"authorization": "Bearer test-key"}),
                    "zhiku": (f"{stack.gateway_url}/v1/chat/completions", {}),
                }
                print(f"measuring levels {levels} (direct and through gateway + generate)", flush=True)
                pids = {"test server": fake.pid, "generate": stack.processes[0].pid}
                pids |= {"gateway": stack.processes[1].pid, "client": os.getpid()}
                results, cpu = asyncio.run(measure(targets, levels, arrivals, args, pids))
    finally:
        os.killpg(fake.pid, signal.SIGTERM)
        fake.wait(timeout=10)
    rows = {pattern: report(by_level, args, pattern) for pattern, by_level in results.items()}
    print(
        "\nCPU ms per 1,000 tokens streamed through Zhiku (all levels): "
        + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generate.json").write_text(
        json.dumps({"settings": vars(args), "overhead": rows, "cpu_ms_per_1000_tokens": cpu}, indent=2),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
