"""Search latency of the retrieve service's edge backend through gRPC, before and after optimize.

Starts the real retrieve gRPC server in-process (edge backend, temporary directory), upserts
N random normalised vectors (default 10k x 384-d, 10 files) through gRPC, then measures
sequential Search latency (top_k 5) in these phases:

* ``rpc baseline``: a 10-point collection, i.e. the fixed cost of one Search through the
  interceptors and gRPC (client and server share this process and its event loop);
* ``full scan``: before any index build (the engine scans every point, exact);
* ``during build``: while the index is built on a copy in a child process (the service keeps
  serving; this shows what callers see meanwhile, the swap pause included);
* ``hnsw``: after the indexed copy was swapped in.

Also prints upsert throughput, the build time, and recall@k of the HNSW results against the
exact full-scan results (random vectors are HNSW's worst case; real embeddings cluster and
recall better; ``--hnsw-ef`` sets the service's ``edge_hnsw_ef``). Figures depend on what
else runs on the box (load average printed).

    python -m bench.bench_retrieve [--points 10000] [--dim 384] [--queries 500] [--top-k 5] [--hnsw-ef N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from services.common.config import CommonSettings
from services.common.grpc_server import GrpcService
from services.retrieve.backends.edge import EdgeBackend
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec
from zhiku.v1 import retrieve_pb2 as pb
from zhiku.v1 import retrieve_pb2_grpc

KB = "bench"
TINY = "tiny"
FILES = 10
Stub = retrieve_pb2_grpc.RetrieveServiceStub


@dataclass
class Phase:
    name: str
    latencies_ms: list[float]
    note: str = ""

    def row(self) -> str:
        lat = np.asarray(self.latencies_ms)
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        figures = f"{p50:>7.2f} | {p99:>7.2f} | {lat.max():>7.2f} | {1000.0 / lat.mean():>6.0f}"
        return f"| {self.name:<13} | {len(lat):>7} | {figures} | {self.note}"


def normalised(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    data = rng.standard_normal((count, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def make_point(i: int, vector: np.ndarray) -> pb.Point:
    return pb.Point(
        id=str(uuid.UUID(int=i + 1)),
        vector=vector.tolist(),
        file_name=f"file-{i % FILES}.txt",
        chunk_index=i,
        text=f"chunk {i}",
    )


async def search(stub: Stub, vector: np.ndarray, top_k: int, kb: str = KB) -> tuple[float, list[str]]:
    started = time.perf_counter()
    reply = await stub.Search(pb.SearchRequest(collection=kb, vector=vector.tolist(), top_k=top_k))
    return (time.perf_counter() - started) * 1000.0, [hit.chunk_id for hit in reply.hits]


async def run_queries(
    stub: Stub, queries: np.ndarray, top_k: int, kb: str = KB
) -> tuple[list[float], list[list[str]]]:
    latencies, results = [], []
    for vector in queries:
        ms, ids = await search(stub, vector, top_k, kb)
        latencies.append(ms)
        results.append(ids)
    return latencies, results


async def upsert_all(stub: Stub, kb: str, data: np.ndarray, batch: int) -> None:
    for start in range(0, len(data), batch):
        chunk = [make_point(i, data[i]) for i in range(start, min(start + batch, len(data)))]
        await stub.Upsert(pb.UpsertRequest(collection=kb, points=chunk))


async def bench(points: int, dim: int, queries: int, top_k: int, batch: int, hnsw_ef: int | None) -> None:
    rng = np.random.default_rng(7)
    data = normalised(rng, points, dim)
    probes = normalised(rng, queries, dim)
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-retrieve-") as tmp:
        settings = RetrieveSettings(
            backend="edge",
            grpc_host="127.0.0.1",
            grpc_port=0,
            metrics_port=0,
            edge_optimize_delay_s=0,  # build explicitly, between the phases
            edge_hnsw_ef=hnsw_ef,
            common=CommonSettings(data_dir=Path(tmp), log_json=False, log_level="WARNING"),
        )
        backend = EdgeBackend(settings)
        service = GrpcService(build_spec(settings, backend), settings)
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        stub = Stub(channel)
        try:
            for kb in (TINY, KB):
                await stub.EnsureCollection(pb.EnsureCollectionRequest(collection=kb, dimension=dim))
            await upsert_all(stub, TINY, data[:10], batch)
            await run_queries(stub, probes[:20], top_k, TINY)  # warm-up
            baseline_ms, _ = await run_queries(stub, probes, top_k, TINY)

            started = time.perf_counter()
            await upsert_all(stub, KB, data, batch)
            upsert_s = time.perf_counter() - started

            await run_queries(stub, probes[:20], top_k)  # warm-up
            exact_ms, exact_ids = await run_queries(stub, probes, top_k)

            build_started = time.perf_counter()
            build = asyncio.create_task(backend.optimize(KB))
            during_ms: list[float] = []
            while not build.done():
                ms, _ = await search(stub, probes[len(during_ms) % queries], top_k)
                during_ms.append(ms)
            outcome = await build
            build_s = time.perf_counter() - build_started
            points_now, indexed = await (await backend.collection(KB)).info()

            hnsw_ms, hnsw_ids = await run_queries(stub, probes, top_k)
            overlap = [len(set(a) & set(b)) / top_k for a, b in zip(exact_ids, hnsw_ids, strict=True)]
        finally:
            await channel.close()
            await service.stop()

    ef = hnsw_ef or "engine default"
    print(f"retrieve edge backend: {points} points x {dim}-d, top_k={top_k}, hnsw_ef={ef}, sequential Search")
    print(f"cpus={os.cpu_count()} loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"upsert: {points / upsert_s:,.0f} points/s through gRPC (batches of {batch})")
    print(f"index build: {outcome} in {build_s:.2f}s (child process + swap); indexed {indexed}/{points_now}")
    print()
    print("| phase         | queries |  p50 ms |  p99 ms |  max ms |    qps | note")
    print("|---------------|---------|---------|---------|---------|--------|-----")
    phases = [
        Phase("rpc baseline", baseline_ms, "10-point collection"),
        Phase("full scan", exact_ms, "exact"),
        Phase("during build", during_ms or [float("nan")], "index built in a child process"),
        Phase("hnsw", hnsw_ms, f"recall@{top_k} vs exact = {np.mean(overlap):.3f}"),
    ]
    for phase in phases:
        print(phase.row())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--hnsw-ef", type=int, default=None, help="search beam width (edge_hnsw_ef)")
    args = parser.parse_args()
    asyncio.run(bench(args.points, args.dim, args.queries, args.top_k, args.batch, args.hnsw_ef))


if __name__ == "__main__":
    main()
