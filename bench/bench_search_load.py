"""``make bench-search-load``: gateway searches under concurrent load, embed batching off and on.

Starts the stack as ``make run`` does (embedded defaults: the bundled ``e5`` model, Qdrant edge,
separate processes), uploads CMRC 2018 passages once (read in place from the shared evaldata),
then starts one stack per configuration of the embed service, each on its own copy of that
data, and runs closed-loop clients against one stack at a time: each of N clients sends
``POST /v1/knowledge_bases/{kb}/search`` (hybrid, top_k 5) with the passages' questions, waits
for the answer and sends the next, at N = 1, 32 and 200. The configurations take turns in
short rounds (the order rotating), so a change in the machine's load (other people's work
on shared cores) falls on all of them alike; the idle stacks cost next to nothing meanwhile.

Printed per configuration and level: searches/s, p50 and p99 latency, errors, recall@5 (a
check that merged batches hand each caller its own vector), texts per embed model call, the
mean time a search spent in the embed service, and CPU milliseconds per search of the
services and of the clients themselves (where the cores went).

Configurations:

* ``before``: the embed service as it was: no dynamic batching (``ZHIKU_EMBED_BATCH_MAX_TEXTS=1``:
  every Embed call is its own model call) and, for e5, OpenMP threads that spin while they wait
  (``ZHIKU_EMBED_LOCAL_SPIN_WAIT=true``; USE never spun);
* ``off``: today's defaults with dynamic batching off: what batching alone adds is ``on``/``off``;
* ``on``: today's defaults (continuous batching: a lone query starts at once, the queries that
  arrive while the model is busy go together in the next call; idle threads sleep);
* ``window``: on, plus ``ZHIKU_EMBED_BATCH_WINDOW_MS`` (``--window-ms``): an idle model waits
  that long for company before it starts. Not run by default (``--configs before,off,on,window``).

The embed service's query cache is off in every configuration (``ZHIKU_EMBED_QUERY_CACHE_SIZE=0``):
the questions cycle, and every search must pay for embedding its query, as new questions do.
Each round measures ``--seconds`` after a warm-up long enough for the clients' queue to settle;
loopback only, bounded. Prints figures, never passes or fails on time.

    python -m bench.bench_search_load [--passages 200] [--levels 1,32,200] [--seconds 8]
                                      [--rounds 2] [--configs before,off,on] [--window-ms 5]
                                      [--model e5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_ingest import cpu_seconds_by_process
from bench.bench_stack import REPO, cmrc, ingest_passages, percentile
from launcher.stack import PORTS_FILE, BackgroundStack, launch_in_background
from services.common.event_loop import run_event_loop
from services.embed.config import EmbedSettings

KB = "load"
Passages = list[tuple[str, str, list[str]]]
# The processes a search runs through, and this one (the clients), whose CPU use is printed.
PROCESSES = ("embed", "gateway", "retrieve", "client")
OFF = {"ZHIKU_EMBED_BATCH_MAX_TEXTS": "1"}
SPIN_BEFORE = {"e5": "true", "use": "false"}  # what each bundled model did before the setting existed
# Histograms read before and after each round, as (process, name, labels the series must carry):
# where a search spends its time server side, and the texts per embed model call.
HISTOGRAMS = {
    "gateway": ("gateway", "zhiku_http_request_seconds", {"route": "/v1/knowledge_bases/{kb}/search"}),
    "embed": ("embed", "zhiku_grpc_request_seconds", {"method": "Embed"}),
    "retrieve": ("retrieve", "zhiku_grpc_request_seconds", {"method": "Search"}),
    "batch": ("embed", "zhiku_embed_batch_size", {}),
}


def warmup_s(clients: int) -> float:
    """Long enough for the first wave of a closed loop to pass and its queue to settle."""
    return 3.0 + 0.03 * clients


@dataclass
class Level:
    """One configuration at one concurrency, summed over its rounds."""

    clients: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    hits: int = 0
    answered: int = 0  # every answer, warm-up and drain included (the CPU figures' denominator)
    cpu_s: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, tuple[float, float]] = field(default_factory=dict)  # (sum, count)

    @property
    def searches(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.searches / self.seconds if self.seconds else math.nan

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q) if self.latencies_ms else math.nan

    def recall(self) -> float:
        return self.hits / self.searches if self.searches else math.nan

    def cpu_ms_per_search(self, name: str) -> float:
        return 1000 * self.cpu_s.get(name, 0.0) / max(self.answered, 1)

    def mean(self, histogram: str) -> float:
        total, count = self.histograms.get(histogram, (0.0, 0.0))
        return total / count if count else math.nan


def histogram_totals(metrics_url: str, name: str, labels: dict[str, str]) -> tuple[float, float]:
    """(sum, count) so far of the histogram ``name``, over the series carrying ``labels``."""
    text = httpx.get(metrics_url, timeout=10).raise_for_status().text
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(key) != value for key, value in labels.items()):
                continue
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return total, count


async def closed_loop(
    url: str, clients: int, seconds: float, questions: Iterator[tuple[str, str]], level: Level
) -> None:
    """``clients`` closed loops for a warm-up and ``seconds``; the answers received in those
    ``seconds`` are the measurement; every client's last search is awaited (drained)."""
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup_s(clients)
    end = measure_from + seconds
    search = f"{url}/v1/knowledge_bases/{KB}/search"
    # aiohttp, not httpx: at 200 connections httpx's pool cost the clients 5-10 ms of CPU
    # per search, taken from the stack on the same cores; aiohttp's cost about 1 ms.
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def client() -> None:
            while (started := loop.time()) < end:
                name, question = next(questions)
                try:
                    async with http.post(search, json={"query": question, "top_k": 5}) as reply:
                        body = await reply.json() if reply.status == 200 else None
                except (aiohttp.ClientError, TimeoutError):
                    body = None
                finished = loop.time()
                level.answered += 1
                if not measure_from <= finished < end:
                    continue
                if body is None:
                    level.errors += 1
                    continue
                level.latencies_ms.append((finished - started) * 1000)
                level.hits += name in {hit["file_name"] for hit in body["data"]}

        await asyncio.gather(*(client() for _ in range(clients)))
    level.seconds += seconds


class Target:
    """One configuration's stack, with the metrics endpoints its rounds read."""

    def __init__(self, name: str, env: dict[str, str], data_dir: Path) -> None:
        self.name = name
        self.stack: BackgroundStack = launch_in_background(
            data_dir,
            REPO / "test-output" / "bench" / f"search-load-{name}.log",
            {"ZHIKU_GENERATE_BACKEND": "extractive", "ZHIKU_LOG_LEVEL": "WARNING", **env},
        )
        ports = json.loads((data_dir / PORTS_FILE).read_text())
        self.metrics = {
            process: f"http://127.0.0.1:{port}/metrics" for process, port in ports["metrics"].items()
        }
        self.metrics["gateway"] = f"{self.stack.url}/metrics"

    def _histograms(self) -> dict[str, tuple[float, float]]:
        return {
            key: histogram_totals(self.metrics[process], name, labels)
            for key, (process, name, labels) in HISTOGRAMS.items()
        }

    def _cpu(self) -> dict[str, float]:
        return {**cpu_seconds_by_process(self.stack.process.pid), "client": time.process_time()}

    def round(self, level: Level, seconds: float, questions: Iterator[tuple[str, str]]) -> None:
        """One round of closed-loop searches at ``level.clients``, added to ``level``."""
        cpu_before, histograms_before = self._cpu(), self._histograms()
        run_event_loop(closed_loop(self.stack.url, level.clients, seconds, questions, level))
        cpu_after, histograms_after = self._cpu(), self._histograms()
        for name, seconds_used in cpu_after.items():
            level.cpu_s[name] = level.cpu_s.get(name, 0.0) + seconds_used - cpu_before.get(name, 0.0)
        for key, (total, count) in histograms_after.items():
            total_before, count_before = histograms_before[key]
            summed, counted = level.histograms.get(key, (0.0, 0.0))
            level.histograms[key] = (summed + total - total_before, counted + count - count_before)


def prepare_data(data_dir: Path, env: dict[str, str], passages: Passages) -> None:
    """Ingest the passages into ``data_dir`` once (kept there when it already has them)."""
    target = Target("ingest", env, data_dir)
    try:
        with httpx.Client(base_url=target.stack.url, timeout=600) as http:
            if http.get(f"/v1/knowledge_bases/{KB}").status_code == 404:
                chunks, ingest_s = ingest_passages(http, KB, passages)
                print(f"[search-load] ingested {len(passages)} passages, {chunks} chunks in {ingest_s:.0f} s")
    finally:
        target.stack.stop()


def run(
    configs: dict[str, dict[str, str]],
    seed: Path,
    work: Path,
    passages: Passages,
    levels: list[int],
    seconds: float,
    rounds: int,
) -> dict[str, list[Level]]:
    """Every configuration at every level, ``rounds`` interleaved rounds each."""
    questions = itertools.cycle([(file, q) for file, _, qs in passages for q in qs])
    targets: list[Target] = []
    try:
        for name, env in configs.items():
            shutil.copytree(seed, work / name)  # one opener per shard directory: a copy each
            targets.append(Target(name, env, work / name))
        results = {name: [Level(clients) for clients in levels] for name in configs}
        for index in range(len(levels)):
            for round_number in range(rounds):
                shift = round_number % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    target.round(results[target.name][index], seconds, questions)
            for target in targets:
                report(target.name, results[target.name][index])
        return results
    finally:
        for target in targets:
            target.stack.stop()


def report(name: str, level: Level) -> None:
    print(
        f"[search-load] {name:<6} {level.clients:>3} clients: {level.rate:6.1f} searches/s, "
        f"p50 {level.latency(0.5):7.1f} ms, p99 {level.latency(0.99):7.1f} ms, {level.errors} errors, "
        f"{level.mean('batch'):.1f} texts per model call; mean ms in gateway "
        f"{1000 * level.mean('gateway'):.0f}, embed {1000 * level.mean('embed'):.0f}, "
        f"retrieve {1000 * level.mean('retrieve'):.0f}",
        flush=True,
    )


def print_table(results: dict[str, list[Level]], title: str) -> None:
    print(f"\n{title}")
    cpu_columns = " | ".join(f"{n} CPU ms/search" for n in PROCESSES)
    print(
        f"| embed | clients | searches/s | p50 ms | p99 ms | errors | recall@5 "
        f"| texts per model call | ms in embed | {cpu_columns} |"
    )
    print("|---" * (9 + len(PROCESSES)) + "|")
    for name, levels in results.items():
        for level in levels:
            cpu = " | ".join(f"{level.cpu_ms_per_search(n):.1f}" for n in PROCESSES)
            print(
                f"| {name} | {level.clients} | {level.rate:.1f} | {level.latency(0.5):.0f} "
                f"| {level.latency(0.99):.0f} | {level.errors} | {level.recall():.3f} "
                f"| {level.mean('batch'):.1f} | {1000 * level.mean('embed'):.0f} | {cpu} |"
            )
    for reference in ("before", "off"):
        for name, levels in results.items():
            if reference not in results or name in ("before", reference):
                continue
            for base, level in zip(results[reference], levels, strict=True):
                print(
                    f"{name}/{reference} at {level.clients} clients: "
                    f"searches/s {level.rate / base.rate:.2f}x, "
                    f"p50 {level.latency(0.5) / base.latency(0.5):.2f}x, "
                    f"p99 {level.latency(0.99) / base.latency(0.99):.2f}x"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=200, help="CMRC passages to ingest")
    parser.add_argument("--levels", default="1,32,200", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=8, help="measured time per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per configuration and level")
    parser.add_argument("--configs", default="before,off,on", help="of before, off, on, window")
    parser.add_argument("--window-ms", type=float, default=5, help="the window configuration's wait")
    parser.add_argument("--model", default="", help="local embedding model (default: the service's)")
    parser.add_argument(
        "--data-dir", type=Path, help="ingest here once and reuse it next time (default: temporary)"
    )
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",") if n]
    base = {"ZHIKU_EMBED_QUERY_CACHE_SIZE": "0"}
    if args.model:
        base["ZHIKU_EMBED_LOCAL_MODEL"] = args.model
    model = args.model or EmbedSettings.model_fields["local_model"].default
    known = {
        "before": {**base, **OFF, "ZHIKU_EMBED_LOCAL_SPIN_WAIT": SPIN_BEFORE[model]},
        "off": {**base, **OFF},
        "on": base,
        "window": {**base, "ZHIKU_EMBED_BATCH_WINDOW_MS": str(args.window_ms)},
    }
    chosen = [name for name in args.configs.split(",") if name]
    unknown = set(chosen) - set(known)
    if unknown:
        raise SystemExit(f"unknown configurations {sorted(unknown)}; pick from {sorted(known)}")
    passages = cmrc(args.passages)
    load_before = "/".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-search-load-") as tmp:
        seed = args.data_dir.resolve() if args.data_dir else Path(tmp) / "seed"
        prepare_data(seed, base, passages)
        configs = {name: known[name] for name in chosen}
        results = run(configs, seed, Path(tmp), passages, levels, args.seconds, args.rounds)
    load_after = "/".join(f"{value:.1f}" for value in os.getloadavg())
    print_table(
        results,
        f"closed-loop searches through the gateway, model {model}{'' if args.model else ' (default)'}, "
        f"{len(passages)} passages, query cache off; per level {args.rounds} rounds of "
        f"{args.seconds:.0f} s per configuration, interleaved; load average (1/5/15 min) {load_before} "
        f"at the start, {load_after} at the end (2 cores: above 2, work was waiting for a core)",
    )


if __name__ == "__main__":
    main()
