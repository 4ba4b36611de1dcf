"""``make bench-search-load``: gateway searches under concurrent load, embed batching off and on.

Starts the stack as ``make run`` does (embedded defaults: the bundled ``e5`` model, Qdrant edge,
separate processes), uploads CMRC 2018 passages once (read in place from the shared evaldata),
then for each configuration of the embed service restarts the stack on the same data and runs
closed-loop clients: each of N clients sends ``POST /v1/knowledge_bases/{kb}/search`` (hybrid,
top_k 5) with the passages' questions, waits for the answer and sends the next, for a fixed
time after a short warm-up, at N = 1, 32 and 200. Printed per configuration and level:
searches/s, p50 and p99 latency, errors, recall@5 (a check that merged batches return each
caller its own vector), texts per embed model call, and CPU milliseconds per search of each
stack process (where the cores went).

Configurations (same host, same data, one run, so their ratios hold on a noisy machine):

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
Loopback only; bounded by ``--seconds`` per level. Prints figures, never passes or fails on time.

    python -m bench.bench_search_load [--passages 200] [--levels 1,32,200] [--seconds 15]
                                      [--configs off,on] [--window-ms 5] [--model e5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_ingest import cpu_seconds_by_process
from bench.bench_stack import REPO, cmrc, ingest_passages, percentile
from services.common.event_loop import run_event_loop
from services.embed.config import EmbedSettings
from services.stack import PORTS_FILE, launch_in_background

KB = "load"
WARMUP_S = 3.0
# The processes a search runs through, and this one (the clients), whose CPU use is printed.
PROCESSES = ("embed", "gateway", "retrieve", "client")
OFF = {"ZHIKU_EMBED_BATCH_MAX_TEXTS": "1"}
SPIN_BEFORE = {"e5": "true", "use": "false"}  # what each bundled model did before the setting existed


@dataclass
class Level:
    clients: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    hits: int = 0
    answered: int = 0  # every answer of the level, warm-up and drain included (for CPU per search)
    texts_per_call: float = math.nan
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Mean seconds a search spent in each service (server side), from its metrics.
    stage_s: dict[str, float] = field(default_factory=dict)

    @property
    def searches(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.searches / self.seconds if self.seconds else math.nan

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q) if self.latencies_ms else math.nan

    def cpu_ms_per_search(self, name: str) -> float:
        return 1000 * self.cpu_s.get(name, 0.0) / max(self.answered, 1)


# Where a search spends its time, server side: (process, histogram, labels it must have).
STAGES = {
    "gateway": ("gateway", "zhiku_http_request_seconds", {"route": "/v1/knowledge_bases/{kb}/search"}),
    "embed": ("embed", "zhiku_grpc_request_seconds", {"method": "Embed"}),
    "retrieve": ("retrieve", "zhiku_grpc_request_seconds", {"method": "Search"}),
}
# Texts per model call of the embed service (process, histogram, labels).
BATCH_SIZES = ("embed", "zhiku_embed_batch_size", {})


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


class Scraper:
    """Reads the stack's histograms before and after a level: means over that level alone."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.wanted = {**STAGES, "batch": BATCH_SIZES}
        self.before: dict[str, tuple[float, float]] = {}

    def _read(self) -> dict[str, tuple[float, float]]:
        return {
            key: histogram_totals(self.urls[process], name, labels)
            for key, (process, name, labels) in self.wanted.items()
        }

    def start(self) -> None:
        self.before = self._read()

    def means(self) -> dict[str, float]:
        after = self._read()
        means = {}
        for key, (total, count) in after.items():
            total_before, count_before = self.before[key]
            means[key] = (total - total_before) / (count - count_before) if count > count_before else math.nan
        return means


async def run_level(
    url: str, clients: int, seconds: float, questions: itertools.cycle[tuple[str, str]]
) -> Level:
    """``clients`` closed loops for WARMUP_S + ``seconds``; only answers received after the
    warm-up and before the end count (searches/s = those answers / ``seconds``)."""
    level = Level(clients, seconds)
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + WARMUP_S
    end = measure_from + seconds
    search = f"{url}/v1/knowledge_bases/{KB}/search"
    # aiohttp, not httpx: at 200 connections httpx's pool cost the bench ~10 ms of CPU per
    # request, CPU taken from the stack on the same cores; aiohttp's C parser costs a tenth.
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def client() -> None:
            while (started := loop.time()) < end:
                name, question = next(questions)
                try:
                    async with http.post(search, json={"query": question, "top_k": 5}) as reply:
                        ok = reply.status == 200
                        body = await reply.json() if ok else None
                except (aiohttp.ClientError, TimeoutError):
                    ok, body = False, None
                finished = loop.time()
                level.answered += 1
                if not measure_from <= finished < end:
                    continue
                if not ok or body is None:
                    level.errors += 1
                    continue
                level.latencies_ms.append((finished - started) * 1000)
                level.hits += name in {hit["file_name"] for hit in body["data"]}

        await asyncio.gather(*(client() for _ in range(clients)))
    return level


def run_config(
    name: str,
    env: dict[str, str],
    data_dir: Path,
    passages: list[tuple[str, str, list[str]]],
    levels: list[int],
    seconds: float,
) -> list[Level]:
    """One stack with ``env`` on ``data_dir`` (ingesting the passages if it is new), all levels."""
    stack = launch_in_background(
        data_dir,
        REPO / "test-output" / "bench" / f"search-load-{name}.log",
        {"ZHIKU_GENERATE_BACKEND": "extractive", "ZHIKU_LOG_LEVEL": "WARNING", **env},
    )
    try:
        ports = json.loads((data_dir / PORTS_FILE).read_text())
        urls = {process: f"http://127.0.0.1:{port}/metrics" for process, port in ports["metrics"].items()}
        scraper = Scraper({**urls, "gateway": f"{stack.url}/metrics"})
        with httpx.Client(base_url=stack.url, timeout=600) as http:
            if http.get(f"/v1/knowledge_bases/{KB}").status_code == 404:
                chunks, ingest_s = ingest_passages(http, KB, passages)
                print(f"[search-load] ingested {len(passages)} passages, {chunks} chunks in {ingest_s:.0f} s")
        questions = itertools.cycle([(file, q) for file, _, qs in passages for q in qs])
        results = []
        for clients in levels:
            cpu_before = {**cpu_seconds_by_process(stack.process.pid), "client": time.process_time()}
            scraper.start()
            level = run_event_loop(run_level(stack.url, clients, seconds, questions))
            means = scraper.means()
            cpu_after = {**cpu_seconds_by_process(stack.process.pid), "client": time.process_time()}
            # Over the whole level, warm-up and drain included, as ``answered`` is.
            level.cpu_s = {n: cpu_after.get(n, 0.0) - cpu_before.get(n, 0.0) for n in cpu_after}
            level.texts_per_call = means.pop("batch")
            level.stage_s = means
            stages = ", ".join(f"{stage} {1000 * s:.0f}" for stage, s in means.items())
            print(
                f"[search-load] {name:<6} {clients:>3} clients: {level.rate:6.1f} searches/s, "
                f"p50 {level.latency(0.5):7.1f} ms, p99 {level.latency(0.99):7.1f} ms, "
                f"{level.errors} errors, {level.texts_per_call:.1f} texts per model call; "
                f"mean ms in {stages}",
                flush=True,
            )
            results.append(level)
        return results
    finally:
        stack.stop()


def print_table(results: dict[str, list[Level]], model: str, seconds: float, loads: str) -> None:
    print(
        f"\nclosed-loop searches through the gateway, {seconds:.0f} s per level after {WARMUP_S:.0f} s "
        f"warm-up, model {model}, query cache off; load average (1, 5, 15 min) {loads}"
    )
    cpu_columns = " | ".join(f"{n} CPU ms/search" for n in PROCESSES)
    print(
        f"| embed | clients | searches/s | p50 ms | p99 ms | errors | recall@5 "
        f"| texts per model call | ms in embed (server) | {cpu_columns} |"
    )
    print("|---" * (9 + len(PROCESSES)) + "|")
    for name, levels in results.items():
        for level in levels:
            recall = level.hits / level.searches if level.searches else math.nan
            cpu = " | ".join(f"{level.cpu_ms_per_search(n):.1f}" for n in PROCESSES)
            print(
                f"| {name} | {level.clients} | {level.rate:.1f} | {level.latency(0.5):.0f} "
                f"| {level.latency(0.99):.0f} | {level.errors} | {recall:.3f} "
                f"| {level.texts_per_call:.1f} | {1000 * level.stage_s['embed']:.0f} | {cpu} |"
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
    parser.add_argument("--seconds", type=float, default=15, help="measured time per level")
    parser.add_argument("--configs", default="before,off,on", help="of before, off, on, window")
    parser.add_argument("--window-ms", type=float, default=5, help="the window configuration's wait")
    parser.add_argument("--model", default="", help="local embedding model (default: the service's)")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the stack's data here and reuse it next time (default: temporary)"
    )
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",") if n]
    base = {"ZHIKU_EMBED_QUERY_CACHE_SIZE": "0"}
    if args.model:
        base["ZHIKU_EMBED_LOCAL_MODEL"] = args.model
    model = args.model or EmbedSettings.model_fields["local_model"].default
    configs = {
        "before": {**base, **OFF, "ZHIKU_EMBED_LOCAL_SPIN_WAIT": SPIN_BEFORE[model]},
        "off": {**base, **OFF},
        "on": base,
        "window": {**base, "ZHIKU_EMBED_BATCH_WINDOW_MS": str(args.window_ms)},
    }
    chosen = [name for name in args.configs.split(",") if name]
    unknown = set(chosen) - set(configs)
    if unknown:
        raise SystemExit(f"unknown configurations {sorted(unknown)}; pick from {sorted(configs)}")
    passages = cmrc(args.passages)
    load_before = "/".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-search-load-") as tmp:
        data_dir = args.data_dir.resolve() if args.data_dir else Path(tmp) / "data"
        results = {
            name: run_config(name, configs[name], data_dir, passages, levels, args.seconds) for name in chosen
        }
    load_after = "/".join(f"{value:.1f}" for value in os.getloadavg())
    loads = f"{load_before} at the start, {load_after} at the end (2 cores: above 2 means waiting)"
    print_table(results, model if args.model else f"{model} (default)", args.seconds, loads)


if __name__ == "__main__":
    main()
