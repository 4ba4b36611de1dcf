"""``make bench-generate-queue``: a burst of concurrent chats against a backend that runs one
generation at a time (the default llama.cpp with the bundled SmolLM2), through the gateway.

What issue 22 measured before the generate service bounded its queue: 32 concurrent chats on
llama.cpp waited in an unbounded queue (time to first token p50 142 s) and a third of them ended
in 504 when the gateway's chat deadline passed. With the bound (``ZHIKU_GENERATE_MAX_QUEUE_WAIT_S``)
the calls that cannot start in time get 503 with ``Retry-After`` at once and the others start
within the bound. The gateway and the generate service run as real processes; two chats are
answered first, so the service knows its service time, as a running one would.

For a run that fits in a few minutes the gateway's chat deadline defaults to 60 s here (300 s in
production) and answers are capped at ``--max-tokens``; the printed table says what was used.

    python -m bench.bench_generate_queue [--concurrency 32] [--max-tokens 128] [--chat-timeout-s 60]
                                         [--max-queue-wait-s 30] [--label after]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from testing.generation_stack import generation_stack

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
QUESTION = "How long does shipping take in Europe, and who pays for returns? Answer in detail."
WARM_UP_CHATS = 2


@dataclass
class Chat:
    status: int = 0  # HTTP status; 200 with an in-band error counts as an error
    ttft_s: float = 0.0  # first content delta, answered chats only
    ended_s: float = 0.0  # when the answer ended or the refusal arrived
    retry_after: str = ""
    error: str = ""


async def one_chat(client: httpx.AsyncClient, max_tokens: int) -> Chat:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "max_tokens": max_tokens,
    }
    chat = Chat()
    started = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            chat.status = response.status_code
            chat.retry_after = response.headers.get("retry-after", "")
            if response.status_code != 200:
                await response.aread()
                chat.error = response.text[:200]
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        chat.error = str(event["error"])[:200]
                        break
                    delta = event["choices"][0]["delta"] if event.get("choices") else {}
                    if delta.get("content") and not chat.ttft_s:
                        chat.ttft_s = time.perf_counter() - started
    except httpx.HTTPError as error:
        chat.error = f"{type(error).__name__}: {error}"
    chat.ended_s = time.perf_counter() - started
    return chat


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def summary(chats: list[Chat], wall_s: float) -> dict[str, object]:
    answered = [c for c in chats if c.status == 200 and not c.error]
    by_status: dict[str, int] = {}
    for chat in chats:
        if chat in answered:
            key = "answered"
        elif chat.status == 200:
            key = "error mid-stream"  # the deadline passed after the stream had started
        else:
            key = str(chat.status) if chat.status else "no response"
        by_status[key] = by_status.get(key, 0) + 1
    refused = [c for c in chats if c.status == 503]
    return {
        "outcomes": by_status,
        # When each client first heard something: its first token, a refusal or an error.
        "first_answer_p50_s": round(quantile([c.ttft_s or c.ended_s for c in chats], 0.5), 2),
        "ttft_p50_s": round(quantile([c.ttft_s for c in answered], 0.5), 2),
        "ttft_max_s": round(quantile([c.ttft_s for c in answered], 1.0), 2),
        "refusal_p50_s": round(quantile([c.ended_s for c in refused], 0.5), 3),
        "refusal_max_s": round(quantile([c.ended_s for c in refused], 1.0), 3),
        "retry_after_s": sorted({int(c.retry_after) for c in refused if c.retry_after.isdigit()}),
        "timeouts_504_at_s": round(quantile([c.ended_s for c in chats if c.status == 504], 0.5), 1),
        "wall_s": round(wall_s, 1),
    }


async def measure(url: str, concurrency: int, max_tokens: int) -> tuple[list[Chat], float, list[Chat]]:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        warm = [await one_chat(client, max_tokens) for _ in range(WARM_UP_CHATS)]
        started = time.perf_counter()
        chats = await asyncio.gather(*(one_chat(client, max_tokens) for _ in range(concurrency)))
        return list(chats), time.perf_counter() - started, warm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat-timeout-s", type=float, default=60.0, help="the gateway's chat deadline")
    parser.add_argument("--max-queue-wait-s", type=float, default=30.0)
    parser.add_argument("--label", default="run", help="name of this run in the results file")
    args = parser.parse_args(argv)
    env = {
        "ZHIKU_GENERATE_BACKEND": "llamacpp",
        "ZHIKU_GENERATE_MAX_QUEUE_WAIT_S": str(args.max_queue_wait_s),
        "ZHIKU_GATEWAY_CHAT_TIMEOUT_S": str(args.chat_timeout_s),
        "ZHIKU_LOG_LEVEL": "WARNING",
    }
    # The openai upstream address is unused: the backend is llama.cpp in the generate process.
    with (
        tempfile.TemporaryDirectory(prefix="zhiku-bench-queue-") as tmp,
        generation_stack("http://127.0.0.1:1/v1", Path(tmp), Path(tmp) / "logs", **env) as stack,
    ):
        chats, wall_s, warm = asyncio.run(measure(stack.gateway_url, args.concurrency, args.max_tokens))
    result = {
        "label": args.label,
        "settings": vars(args),
        "warm_up_s": [round(c.ended_s, 2) for c in warm],
        **summary(chats, wall_s),
        "errors": sorted({c.error[:120] for c in chats if c.error}),
    }
    print(
        f"{args.concurrency} concurrent streamed chats, llama.cpp (one at a time), max_tokens "
        f"{args.max_tokens}, gateway chat deadline {args.chat_timeout_s:g} s, "
        f"max queue wait {args.max_queue_wait_s:g} s [{args.label}]"
    )
    print(f"  warm-up chats took {result['warm_up_s']} s")
    for key in (
        "outcomes",
        "first_answer_p50_s",
        "ttft_p50_s",
        "ttft_max_s",
        "refusal_p50_s",
        "refusal_max_s",
        "retry_after_s",
        "timeouts_504_at_s",
        "wall_s",
    ):
        print(f"  {key:18} {result[key]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "generate_queue.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs = [r for r in runs if r.get("label") != args.label] + [
        {**result, "chats": [asdict(c) for c in chats]}
    ]
    path.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"  written to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
