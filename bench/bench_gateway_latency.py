"""Search latency through the gateway at 10k and 100k chunks, next to its parts, in one run.

The issue's target is "gateway search p50 <= the query's embedding time + 5 ms": whatever the
gateway adds (HTTP, the knowledge-base lookup, the gRPC hops, the search itself) should cost
no more than 5 ms over embedding the question. So each size prints, measured sequentially on
the same running stack (``make run``'s processes, embedded defaults):

- ``embed``: ``Embed`` of one question over gRPC (questions never seen before: the embed
  service's query cache would otherwise hide the model);
- ``search``: ``Search`` over gRPC with a precomputed vector (hybrid, top_k 10);
- ``gateway``: ``POST /v1/knowledge_bases/{kb}/search`` (hybrid, top_k 10), new questions
  again, so it pays for embedding too. Timed with the standard library's ``http.client`` on a
  kept-alive connection, as lean a client as the gRPC ones above (httpx costs about 0.4 ms
  more per request here, which is the client's time, not the gateway's).

The three are interleaved (one of each per step), so each sees the same machine state: a
service woken after the others worked, as in real traffic. Embedding back to back (the
service never idle, its threads and caches hot) is printed too; on this VM it is 1-2 ms
faster than the same call interleaved, a difference the gateway does not cause.

The collection is filled by ingesting one real file through the public API (so the catalog
knows the knowledge base and its chunk count) and then upserting jittered copies of real
CMRC chunk vectors straight into the retrieve service, which is far faster than ingesting
100k chunks and exercises the same index. Each size waits for the background index build
before measuring, as a settled production collection would be.

    python -m bench.bench_gateway_latency [--sizes 10000,100000] [--queries 200] [--model use]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx
import numpy as np

from bench.bench_embed import evaldata_dir, load_cmrc
from bench.bench_stack import REPO, percentile
from launcher.stack import PORTS_FILE, launch_in_background
from services.retrieve.backends.edge_shard import ShardOptions
from services.retrieve.config import RetrieveSettings
from zhiku.v1 import embed_pb2, embed_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

KB = "latency"
# The service's defaults (model_construct reads no environment; the stack drops ZHIKU_* too).
SHARD_OPTIONS = ShardOptions.from_settings(RetrieveSettings.model_construct())
BATCH = 512


def summary(times_ms: list[float]) -> tuple[float, float]:
    return percentile(times_ms, 0.5), percentile(times_ms, 0.99)


class LatencyRun:
    """One stack, one knowledge base grown to each size in turn."""

    def __init__(self, url: str, ports: dict[str, int], log_path: Path) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)  # set-up calls
        address = httpx.URL(url)
        self.timed_http = http.client.HTTPConnection(address.host, address.port, timeout=120)
        self.embed_channel = grpc.insecure_channel(f"127.0.0.1:{ports['embed']}")
        self.retrieve_channel = grpc.insecure_channel(f"127.0.0.1:{ports['retrieve']}")
        self.embed = embed_pb2_grpc.EmbedServiceStub(self.embed_channel)
        self.retrieve = retrieve_pb2_grpc.RetrieveServiceStub(self.retrieve_channel)
        self.log_path = log_path
        self.points = 0

    def close(self) -> None:
        self.http.close()
        self.timed_http.close()
        self.embed_channel.close()
        self.retrieve_channel.close()

    def embed_texts(self, texts: list[str], kind: int) -> np.ndarray:
        vectors = []
        for start in range(0, len(texts), 64):
            reply = self.embed.Embed(embed_pb2.EmbedRequest(texts=texts[start : start + 64], kind=kind))
            vectors.extend(list(vector.values) for vector in reply.vectors)
        return np.asarray(vectors, dtype=np.float32)

    def seed(self, first_passage: str) -> None:
        """Create the knowledge base through the API and ingest one real file into it."""
        self.http.post("/v1/knowledge_bases", json={"name": KB}).raise_for_status()
        files = [("files", ("seed.txt", first_passage.encode(), "text/plain"))]
        job = self.http.post(f"/v1/knowledge_bases/{KB}/files", files=files).raise_for_status().json()
        job_id = job["jobs"][0]["id"]
        while (state := self.http.get(f"/v1/jobs/{job_id}").json())["state"] not in ("succeeded", "failed"):
            time.sleep(0.2)
        if state["state"] != "succeeded":
            raise RuntimeError(f"seed ingestion failed: {state}")

    def grow_to(self, size: int, base: np.ndarray, texts: list[str], rng: np.random.Generator) -> float:
        started = time.perf_counter()
        while self.points < size:
            ids = range(self.points, min(self.points + BATCH, size))
            vectors = base[[i % len(base) for i in ids]] + rng.normal(0, 0.02, (len(ids), base.shape[1]))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            points = [
                retrieve_pb2.Point(
                    id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{KB}/{i}")),
                    vector=vector.tolist(),
                    file_name=f"synthetic-{i % 997}.txt",
                    chunk_index=i,
                    text=texts[i % len(texts)],
                )
                for i, vector in zip(ids, vectors, strict=True)
            ]
            self.retrieve.Upsert(retrieve_pb2.UpsertRequest(collection=KB, points=points))
            self.points = ids[-1] + 1
        return time.perf_counter() - started

    def wait_for_index(self, size: int, dimension: int, timeout_s: float) -> bool:
        """True once the service has settled the collection: a background build covered all
        but a tail the service leaves to exact search (``ShardOptions.tail_to_build``).

        Waiting for just any new build is not enough: builds also run while the collection
        grows, and one that finished at 82k of 100k left a 17.5k exact-scan tail: gRPC search
        p50 11.1 ms, against 6.4 ms once settled on the same host."""
        wanted = size - SHARD_OPTIONS.tail_to_build(dimension)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if max(self.indexed_sizes(), default=0) >= wanted:
                return True
            time.sleep(1)
        return False

    def indexed_sizes(self) -> list[int]:
        """Points in each finished build of the knowledge base, from the retrieve log."""
        log = self.log_path.read_text(errors="replace")
        return [int(n) for n in re.findall(rf'index of {KB} built".*?"points": (\d+)', log)]

    def time_embed(self, question: str) -> float:
        begun = time.perf_counter()
        self.embed.Embed(embed_pb2.EmbedRequest(texts=[question], kind=embed_pb2.EMBED_KIND_QUERY))
        return (time.perf_counter() - begun) * 1000

    def time_grpc_search(self, question: str, vector: np.ndarray) -> float:
        request = retrieve_pb2.SearchRequest(
            collection=KB,
            vector=vector.tolist(),
            query_text=question,
            mode=retrieve_pb2.SEARCH_MODE_HYBRID,
            top_k=10,
        )
        begun = time.perf_counter()
        self.retrieve.Search(request)
        return (time.perf_counter() - begun) * 1000

    def time_gateway_search(self, question: str) -> float:
        body = json.dumps({"query": question, "top_k": 10}).encode()
        headers = {"Content-Type": "application/json"}
        path = f"/v1/knowledge_bases/{KB}/search"
        for attempt in range(2):  # the server closes a connection idle past its keep-alive
            begun = time.perf_counter()
            try:
                self.timed_http.request("POST", path, body=body, headers=headers)
                reply = self.timed_http.getresponse()
                payload = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.timed_http.close()  # reconnects on the next request, which is timed afresh
                if attempt:
                    raise
                continue
            break
        elapsed = (time.perf_counter() - begun) * 1000
        if reply.status != 200:
            raise RuntimeError(f"gateway search answered {reply.status}: {payload[:200]!r}")
        return elapsed

    def measure(
        self, hot_q: list[str], embed_q: list[str], search_q: list[str], gateway_q: list[str]
    ) -> dict[str, list[float]]:
        """Embed alone back to back, then embed, gRPC search and gateway search interleaved.

        Back to back, the embed service never idles, so its threads and caches stay hot;
        inside a gateway search it is woken after the other services worked, which on this
        VM costs 1-2 ms more per call. Interleaved, the three measurements see the same
        machine state, so gateway minus embed is what the gateway path itself adds."""
        times: dict[str, list[float]] = {
            "embed_hot": [self.time_embed(q) for q in hot_q],
            "embed": [],
            "search": [],
            "gateway": [],
        }
        vectors = self.embed_texts(search_q, embed_pb2.EMBED_KIND_QUERY)
        for n, (question, vector) in enumerate(zip(search_q, vectors, strict=True)):
            times["embed"].append(self.time_embed(embed_q[n]))
            times["search"].append(self.time_grpc_search(question, vector))
            times["gateway"].append(self.time_gateway_search(gateway_q[n]))
        return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200, help="questions per measurement")
    parser.add_argument("--model", default="use", help="local embedding model (use or e5)")
    parser.add_argument("--base-chunks", type=int, default=400, help="real chunk vectors to jitter")
    parser.add_argument("--index-timeout", type=float, default=600)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size]
    cmrc = load_cmrc(evaldata_dir(), passage_limit=10**9)
    passages, questions = cmrc.passages, cmrc.questions
    # Disjoint question sets per size, so no measurement is served from the query cache.
    needed = (3 * args.queries + args.queries // 2) * len(sizes)
    if needed > len(questions):
        raise SystemExit(f"--queries too large: {needed} distinct questions needed, {len(questions)} exist")
    fresh = iter(questions)

    with tempfile.TemporaryDirectory(prefix="zhiku-bench-latency-") as tmp:
        data_dir = Path(tmp) / "data"
        log_path = REPO / "test-output" / "bench" / f"gateway-latency-{args.model}.log"
        stack = launch_in_background(
            data_dir,
            log_path,
            {
                "ZHIKU_EMBED_LOCAL_MODEL": args.model,
                "ZHIKU_GENERATE_BACKEND": "extractive",
                # Above the gap between two upsert batches (about 3 s), so the index is built
                # once the collection reaches its size, not over and over while it grows.
                "ZHIKU_RETRIEVE_EDGE_OPTIMIZE_DELAY_S": "5",
                "ZHIKU_LOG_LEVEL": "INFO",
            },
        )
        rows = []
        try:
            run = LatencyRun(stack.url, json.loads((data_dir / PORTS_FILE).read_text())["grpc"], log_path)
        except BaseException:
            stack.stop()
            raise
        try:
            run.seed(passages[0])
            base_texts = passages[1 : 1 + args.base_chunks]
            base = run.embed_texts(base_texts, embed_pb2.EMBED_KIND_PASSAGE)
            rng = np.random.default_rng(7)
            for size in sizes:
                upsert_s = run.grow_to(size, base, base_texts, rng)
                # Below this many unindexed points the service searches exactly, by design.
                dimension = base.shape[1]
                first_index = SHARD_OPTIONS.optimize_min_unindexed
                indexed = size >= first_index and run.wait_for_index(size, dimension, args.index_timeout)
                embed_q = [next(fresh) for _ in range(args.queries)]
                search_q = [next(fresh) for _ in range(args.queries)]
                gateway_q = [next(fresh) for _ in range(args.queries)]
                for question in questions[-20:]:  # warm the HTTP and gRPC paths
                    run.time_gateway_search(question)
                hot_q = [next(fresh) for _ in range(args.queries // 2)]
                times = run.measure(hot_q, embed_q, search_q, gateway_q)
                rows.append((size, upsert_s, indexed, {k: summary(v) for k, v in times.items()}))
                print(
                    f"<!-- {size:,} points: upserted in {upsert_s:.0f} s, index built: {indexed} -->",
                    flush=True,
                )
        finally:
            run.close()
            stack.stop()

    print(
        f"\nsequential hybrid searches, top_k 10, {args.model}, new questions throughout; embed, "
        f"gRPC search and gateway search interleaved ({args.queries} each), plus embed back to back "
        f"({args.queries // 2})"
    )
    print(
        "| chunks | embed back to back p50 ms | embed p50 ms | p99 | gRPC search p50 ms | p99 "
        "| gateway search p50 ms | p99 | gateway - embed p50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, _, indexed, ms in rows:
        note = " (HNSW index)" if indexed else " (exact search)"
        embed, search, gateway = ms["embed"], ms["search"], ms["gateway"]
        print(
            f"| {size:,}{note} | {ms['embed_hot'][0]:.1f} | {embed[0]:.1f} | {embed[1]:.1f} "
            f"| {search[0]:.1f} | {search[1]:.1f} "
            f"| {gateway[0]:.1f} | {gateway[1]:.1f} | {gateway[0] - embed[0]:+.1f} |"
        )


if __name__ == "__main__":
    main()
