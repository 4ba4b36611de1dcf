"""One knowledge base at 100k and 1M chunks on the embedded engine (edge backend).

For each size, in a fresh directory, the real retrieve gRPC service (edge backend, default
settings, in this process) is filled through ``Upsert`` by a writer process with real
CMRC/SQuAD chunks (``bench.scale_data``: 384-d vectors of the default model) and jittered
copies of them (Gaussian noise on the vector, renormalised; the text kept, so the sparse
vectors are real). The writer sends each point's sparse vector, encoded once per base text
with the spec EnsureCollection answers, as the ingest worker does: the service encodes
nothing itself while it serves searches. Then, after the background index builds have settled, a searcher
process asks real questions (hybrid, top_k 10, one at a time) while the writer keeps
ingesting. Reported per size:

* time to fill (the writer's wall time) and to index (from the end of the fill until no
  build is pending or running);
* gRPC search p50/p99 while ingestion continues, and how many points were added meanwhile;
* gRPC search p50/p99 while a writer adds a steady ``--steady-rates`` points a second: 200
  (a real ingestion on a small machine), 600 (the ingestion pipeline's own ceiling here until
  2026-12-04, measured with an embedder that costs nothing: bench_ingest's instant row) and
  830 (that ceiling since: 816-838 chunks/s), next to the flat-out writer above, 3-6 times
  faster than the pipeline can feed it (1M, 100k);
* peak extra disk per index build or shard merge: what a build or merge writes besides the
  knowledge base (a build's copy ``*.optimizing~``, a merge's new shard ``~merge-*``, retired
  shards ``~trash-*`` not deleted yet; sampled every 0.2 s) against the knowledge base's size
  on disk at that moment;
* the retrieve process's RSS (this process: the clients run in their own processes; index
  builds run in child processes, their peak RSS reported apart), shards and builds.

Writer, searcher, service and index builds share the machine's cores, so latency depends on
what else runs (load average printed). Targets (issue 20): p50 <= 10 ms, p99 <= 50 ms, disk
per build <= 25 % of the knowledge base.

    python -m bench.bench_scale [--sizes 100000,1000000] [--queries 300] [--batch 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.scale_data import load
from services.common.config import CommonSettings
from services.common.grpc_server import GrpcService
from services.common.sparse import SparseEncoder, SparseVector
from services.embed.config import EmbedSettings
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.backends.edge_merge import MERGE_PREFIX
from services.retrieve.backends.edge_shard import OPTIMIZING_SUFFIX, TRASH_PREFIX
from services.retrieve.config import RetrieveSettings
from services.retrieve.metrics import WRITE_YIELD
from services.retrieve.server import build_spec
from zhiku.v1 import retrieve_pb2 as pb
from zhiku.v1 import retrieve_pb2_grpc

KB = "scale"
JITTER = 0.02
FILE_CHUNKS = 50  # chunks per file name: a knowledge base of 20k files at 1M
TARGET_P50_MS, TARGET_P99_MS, TARGET_DISK = 10.0, 50.0, 0.25


# ----- client processes -----


def _point(
    i: int,
    data_vectors: np.ndarray,
    texts: list[str],
    rng: np.random.Generator,
    sparse: list[SparseVector] | None,
    spec: str,
) -> pb.Point:
    """Point ``i``: base text ``i % len(texts)``, its vector jittered past the first copy, and
    the base text's sparse vector by ``spec`` when given (as the ingest worker sends them)."""
    base = i % len(texts)
    vector = (
        data_vectors[base]
        if i < len(texts)
        else data_vectors[base] + rng.normal(0, JITTER, data_vectors.shape[1])
    )
    vector = vector / np.linalg.norm(vector)
    return pb.Point(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{KB}/{i}")),
        vector=vector.tolist(),
        file_name=f"file-{i // FILE_CHUNKS}.txt",
        chunk_index=i % FILE_CHUNKS,
        text=texts[base],
        sparse_indices=sparse[base].indices if sparse is not None else (),
        sparse_values=sparse[base].values if sparse is not None else (),
        sparse_encoder=spec if sparse is not None else "",
    )


async def writer(port: int, model: str, start: int, count: int, batch: int, rate: float = 0.0) -> None:
    """Upsert points ``start .. start+count`` (count 0: until killed), at most ``rate`` points
    a second when given; print the time taken."""
    data = load(model, 0, 0)
    rng = np.random.default_rng(start)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = retrieve_pb2_grpc.RetrieveServiceStub(channel)
        ensured = await stub.EnsureCollection(
            pb.EnsureCollectionRequest(collection=KB, dimension=data.vectors.shape[1])
        )
        # The writer encodes, as the ingest worker does: each base text once (its jittered
        # copies repeat the text), before the clock starts.
        spec = ensured.sparse_encoder
        sparse = None
        if spec:
            encoder = SparseEncoder.from_spec(spec)
            sparse = [encoder.document(text) for text in data.texts]
        began, i = time.perf_counter(), start
        while count == 0 or i < start + count:
            end = i + batch if count == 0 else min(i + batch, start + count)
            points = [_point(n, data.vectors, data.texts, rng, sparse, spec) for n in range(i, end)]
            await stub.Upsert(pb.UpsertRequest(collection=KB, points=points), timeout=600)
            i = end
            if rate > 0:
                await asyncio.sleep(max(0.0, began + (i - start) / rate - time.perf_counter()))
            if count == 0:
                print(json.dumps({"written": i - start}), flush=True)
    print(json.dumps({"seconds": time.perf_counter() - began, "written": i - start}), flush=True)


async def searcher(port: int, model: str, queries: int) -> None:
    """Sequential hybrid searches with real questions; print the latencies (ms)."""
    data = load(model, 0, queries)
    times = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = retrieve_pb2_grpc.RetrieveServiceStub(channel)
        for i in range(queries):
            request = pb.SearchRequest(
                collection=KB,
                vector=data.queries[i % len(data.queries)].tolist(),
                query_text=data.questions[i % len(data.questions)],
                mode=pb.SEARCH_MODE_HYBRID,
                top_k=10,
            )
            begun = time.perf_counter()
            reply = await stub.Search(request)
            times.append((time.perf_counter() - begun) * 1000)
            assert reply.hits, "a search found nothing"
    print(json.dumps({"latencies_ms": times}), flush=True)


# ----- measuring the service -----


async def du(paths: list[Path]) -> int:
    """Bytes allocated under ``paths`` (sparse files count what they hold), by coreutils
    ``du`` in a child process: walking a 1M-chunk knowledge base in this process held the GIL
    that the service's searches need, for tens of milliseconds five times a second."""
    if not paths:
        return 0
    process = await asyncio.create_subprocess_exec(
        "du",
        "-s",
        "-B1",
        "--",
        *map(str, paths),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()  # entries a merge removed meanwhile are skipped
    return sum(int(line.split("\t", 1)[0]) for line in out.decode().splitlines() if line)


def rss_bytes(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


@dataclass
class Sampler:
    """Disk of build copies against the knowledge base, and the service's memory."""

    root: Path
    kb_bytes: int = 1
    _kb_final: int = 0
    peak_rss: int = 0
    # (extra bytes of build copies, knowledge base bytes) while a build runs
    samples: list[tuple[int, int]] = field(default_factory=list)

    def peak(self, from_kb: int = 0) -> tuple[float, int]:
        """Largest copy against the knowledge base at that moment, over builds that ran
        once the knowledge base had ``from_kb`` bytes: (ratio, bytes)."""
        kept = [(extra / kb, extra) for extra, kb in self.samples if kb >= from_kb]
        return max(kept, default=(0.0, 0))

    async def run(self) -> None:
        last_kb = 0.0
        building = False
        while True:
            now = time.monotonic()
            # the size a build is measured against: at most a second old when one starts
            if now - last_kb > (3.0 if building else 1.0):
                self.kb_bytes = max(1, await self.kb())
                last_kb = now
            extra = await self.extra()
            building = extra > 0
            if building:
                self.samples.append((extra, self.kb_bytes))
            self.peak_rss = max(self.peak_rss, rss_bytes())
            await asyncio.sleep(0.2)

    def _entries(self, transient: bool) -> list[Path]:
        folder = self.root / KB
        if not folder.exists():
            return []
        return [e for e in folder.iterdir() if _transient(e.name) == transient]

    async def kb(self) -> int:
        return await du(self._entries(transient=False))

    async def extra(self) -> int:
        return await du(self._entries(transient=True))


def _transient(name: str) -> bool:
    """A build's copy, a merge's new shard, or a retired shard not deleted yet."""
    return name.endswith(OPTIMIZING_SUFFIX) or name.startswith((MERGE_PREFIX, TRASH_PREFIX))


@dataclass
class Row:
    size: int
    fill_s: float = 0.0
    index_s: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    idle_p50: float = 0.0
    idle_p99: float = 0.0
    steady: dict[float, tuple[float, float]] = field(default_factory=dict)  # rate -> p50, p99
    searched: int = 0
    added: int = 0
    yields: int = 0  # write slices that waited for a search (flat-out phase)
    yield_s: float = 0.0  # ... and their total wait
    disk_ratio: float = 0.0
    disk_ratio_half: float = 0.0
    disk_ratio_all: float = 0.0
    peak_extra_mb: float = 0.0
    kb_mb: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    child_rss_mb: float = 0.0
    shards: int = 0
    points: int = 0
    builds: int = 0


def write_yields() -> tuple[int, float]:
    """Write slices that have waited for searches in flight in this process, and the seconds."""
    samples = {sample.name: sample.value for sample in next(iter(WRITE_YIELD.collect())).samples}
    name = "zhiku_retrieve_write_yield_seconds"
    return int(samples[f"{name}_count"]), samples[f"{name}_sum"]


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_scale", *args, stdout=asyncio.subprocess.PIPE
    )


def last_json(out: bytes) -> dict[str, object]:
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    result: dict[str, object] = json.loads(lines[-1]) if lines else {}
    return result


async def settle(edge: EdgeBackend) -> None:
    """Until the service has no build pending (waiting for writes to settle) or running."""
    collection = await edge.collection(KB)
    idle = 0
    while idle < 4:
        idle = 0 if collection.building else idle + 1
        await asyncio.sleep(0.5)


def edge_settings(data_dir: Path, **overrides: Any) -> RetrieveSettings:
    """The retrieve service's defaults on the edge backend under ``data_dir``, on free ports
    (what a bench runs in its own process), but for ``overrides``."""
    return RetrieveSettings(
        backend="edge",
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        common=CommonSettings(data_dir=data_dir, log_json=False),
        **overrides,
    )


async def measure(size: int, args: argparse.Namespace) -> Row:
    row = Row(size)
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-scale-", dir=args.dir) as tmp:
        settings = edge_settings(Path(tmp))
        edge = EdgeBackend(settings)
        service = GrpcService(build_spec(settings, edge), settings)
        await service.start()
        sampler = Sampler(settings.shard_root)
        sampling = asyncio.create_task(sampler.run())
        port = str(service.port)
        try:
            fill = await spawn(
                "--role",
                "writer",
                "--port",
                port,
                "--start",
                "0",
                "--count",
                str(size),
                "--batch",
                str(args.batch),
                "--model",
                args.model,
            )
            out, _ = await fill.communicate()
            row.fill_s = float(last_json(out)["seconds"])  # type: ignore[arg-type]
            began = time.perf_counter()
            await settle(edge)
            row.index_s = time.perf_counter() - began
            print(
                f"<!-- {size:,}: filled in {row.fill_s:.0f} s, indexed {row.index_s:.0f} s later -->",
                file=sys.stderr,
            )
            idle = await spawn(
                "--role", "searcher", "--port", port, "--queries", str(args.queries), "--model", args.model
            )
            out, _ = await idle.communicate()
            quiet = np.asarray(last_json(out)["latencies_ms"])
            row.idle_p50, row.idle_p99 = float(np.percentile(quiet, 50)), float(np.percentile(quiet, 99))
            for number, rate in enumerate(args.steady_rates):
                # Each writer its own ids: none overrides another's points.
                steady, _ = await search_while_writing(port, size + 1_000_000 * number, rate, args)
                row.steady[rate] = (float(np.percentile(steady, 50)), float(np.percentile(steady, 99)))
            yields_before = write_yields()
            latencies, row.added = await search_while_writing(port, size + 10_000_000, args.ingest_rate, args)
            (count_after, waited_after), (count_before, waited_before) = write_yields(), yields_before
            row.yields, row.yield_s = count_after - count_before, waited_after - waited_before
            row.p50, row.p99 = float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
            row.searched = len(latencies)
            collection = await edge.collection(KB)
            row.points = await collection.count()
            row.shards = len(collection.units)
            sampler._kb_final = await sampler.kb()
        finally:
            sampling.cancel()
            row.rss_mb = rss_bytes() / 2**20
            await service.stop()
        sampler.kb_bytes = max(1, sampler._kb_final)
        row.disk_ratio, extra = sampler.peak(from_kb=int(sampler.kb_bytes * 0.9))
        row.disk_ratio_half = sampler.peak(from_kb=sampler.kb_bytes // 2)[0]
        row.disk_ratio_all = sampler.peak()[0]
        row.peak_extra_mb = extra / 2**20
        row.kb_mb = sampler.kb_bytes / 2**20
        row.peak_rss_mb = sampler.peak_rss / 2**20
        row.child_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return row


async def search_while_writing(
    port: str, start: int, rate: float, args: argparse.Namespace
) -> tuple[np.ndarray, int]:
    """Search latencies (ms) while a writer adds new points from ``start`` at ``rate`` a
    second (0: flat out), and how many it added meanwhile."""
    ingest = await spawn(
        "--role",
        "writer",
        "--port",
        port,
        "--start",
        str(start),
        "--count",
        "0",
        "--ingest-rate",
        str(rate),
        "--batch",
        str(args.batch),
        "--model",
        args.model,
    )
    await asyncio.sleep(2.0)  # the writer is under way
    search = await spawn(
        "--role", "searcher", "--port", port, "--queries", str(args.queries), "--model", args.model
    )
    out, _ = await search.communicate()
    ingest.terminate()
    written, _ = await ingest.communicate()
    progress = [json.loads(line) for line in written.decode().splitlines() if line.startswith("{")]
    return np.asarray(last_json(out)["latencies_ms"]), int(progress[-1]["written"]) if progress else 0


def print_rows(rows: list[Row], rate: float, steady_rates: list[float]) -> None:
    args_rate = f"{rate:.0f} points/s" if rate > 0 else "flat out"

    def line(name: str, cells: list[str], target: str = "") -> None:
        print(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    print("\n| | " + " | ".join(f"{row.size:,} chunks" for row in rows) + " | target |")
    print("|---|" + "---|" * len(rows) + "---|")
    line(
        "gRPC search p50 ms (hybrid, while ingesting)",
        [f"{r.p50:.1f}" for r in rows],
        f"<= {TARGET_P50_MS:.0f}",
    )
    line("gRPC search p99 ms", [f"{r.p99:.1f}" for r in rows], f"<= {TARGET_P99_MS:.0f}")
    line("... with no ingestion: p50 / p99 ms", [f"{r.idle_p50:.1f} / {r.idle_p99:.1f}" for r in rows])
    for steady_rate in steady_rates:
        line(
            f"... while a writer adds {steady_rate:.0f} points/s: p50 / p99 ms",
            [f"{r.steady[steady_rate][0]:.1f} / {r.steady[steady_rate][1]:.1f}" for r in rows],
        )
    line("writer during the searches", [args_rate] * len(rows))
    line("searches / points added meanwhile", [f"{r.searched} / {r.added:,}" for r in rows])
    line(
        "write slices that waited for a search / seconds waited",
        [f"{r.yields:,} / {r.yield_s:.1f}" for r in rows],
    )
    line(
        "peak extra disk per build or merge, % of KB (at >= 90% of the final KB)",
        [f"{100 * r.disk_ratio:.1f}" for r in rows],
        f"<= {100 * TARGET_DISK:.0f}",
    )
    line(
        "... at >= half the final KB / over every build (a small KB's first builds)",
        [f"{100 * r.disk_ratio_half:.1f} / {100 * r.disk_ratio_all:.1f}" for r in rows],
    )
    line("peak extra disk MB / KB on disk MB", [f"{r.peak_extra_mb:.0f} / {r.kb_mb:.0f}" for r in rows])
    line(
        "time to fill s (points/s)", [f"{r.fill_s:.0f} ({r.size / max(r.fill_s, 1e-9):.0f}/s)" for r in rows]
    )
    line("time to index after the fill s", [f"{r.index_s:.0f}" for r in rows])
    line("retrieve RSS MB (end / peak)", [f"{r.rss_mb:.0f} / {r.peak_rss_mb:.0f}" for r in rows])
    line("child processes peak RSS MB (builds, writer, searcher)", [f"{r.child_rss_mb:.0f}" for r in rows])
    line("shards / points at the end", [f"{r.shards} / {r.points:,}" for r in rows])
    print(f"\nload average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--model", default=EmbedSettings.model_fields["local_model"].default)
    parser.add_argument(
        "--ingest-rate", type=float, default=0.0, help="points/s of the writer during searches (0: flat out)"
    )
    parser.add_argument(
        "--steady-rates",
        type=lambda text: [float(rate) for rate in text.split(",") if rate.strip()],
        default=[200.0, 600.0, 830.0],
        help="points/s of the steady writers, comma-separated ('': none)",
    )
    parser.add_argument("--dir", default=None, help="where the knowledge bases are written (default: temp)")
    parser.add_argument(
        "--role", choices=["main", "writer", "searcher"], default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "writer":
        asyncio.run(writer(args.port, args.model, args.start, args.count, args.batch, args.ingest_rate))
        return
    if args.role == "searcher":
        asyncio.run(searcher(args.port, args.model, args.queries))
        return
    data = load(args.model, 1200, args.queries)  # embeds once, cached
    print(
        f"<!-- base: {len(data.texts)} real chunks x {data.vectors.shape[1]}-d ({args.model}), "
        f"{len(data.questions)} questions -->",
        file=sys.stderr,
    )
    rows: list[Row] = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        rows.append(asyncio.run(measure(size, args)))
        print_rows(rows, args.ingest_rate, args.steady_rates)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
