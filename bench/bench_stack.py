"""Whole-stack figures per embedding model: ingest chunks/s and gateway search latency.

Starts the stack as ``make run`` does (separate processes, Celery worker, embedded Qdrant),
once per local embedding model, uploads CMRC 2018 passages through the public HTTP API, and
times (a) upload-to-all-jobs-succeeded and (b) ``POST /v1/knowledge_bases/{kb}/search`` for the
passages' questions. Both models run in the same invocation, so their ratio is comparable
even on a noisy machine. Prints figures; never passes or fails on time.

    python -m bench.bench_stack [--passages 60] [--queries 100] [--models use e5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from launcher.stack import launch_in_background

REPO = Path(__file__).resolve().parents[1]
EVALDATA = Path(os.environ.get("ZHIKU_EVALDATA", REPO.parent / "shared" / "evaldata"))


def cmrc(n_passages: int) -> list[tuple[str, str, list[str]]]:
    data = json.loads((EVALDATA / "cmrc2018" / "cmrc2018_dev.squad.json").read_text("utf-8"))
    out: list[tuple[str, str, list[str]]] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            if len(out) < n_passages:
                questions = [qa["question"] for qa in paragraph["qas"]]
                out.append((f"p{len(out):04d}.txt", paragraph["context"], questions))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ingest_passages(
    http: httpx.Client, kb: str, passages: list[tuple[str, str, list[str]]], timeout_s: float = 3600
) -> tuple[int, float]:
    """Create ``kb``, upload the passages in one request, wait for every job: (chunks, seconds)."""
    http.post("/v1/knowledge_bases", json={"name": kb}).raise_for_status()
    files = [("files", (name, text.encode(), "text/plain")) for name, text, _ in passages]
    started = time.perf_counter()
    jobs = http.post(f"/v1/knowledge_bases/{kb}/files", files=files).raise_for_status().json()["jobs"]
    pending = {job["id"] for job in jobs}
    chunks = 0
    while pending:
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"{len(pending)} ingestion jobs still unfinished after {timeout_s:.0f} s")
        time.sleep(0.2)
        for job_id in list(pending):
            job = http.get(f"/v1/jobs/{job_id}").json()
            if job["state"] == "failed":
                raise RuntimeError(f"job failed: {job}")
            if job["state"] == "succeeded":
                pending.discard(job_id)
                chunks += job["chunks"]
    return chunks, time.perf_counter() - started


def run_one(model: str, passages: list[tuple[str, str, list[str]]], n_queries: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = launch_in_background(
            Path(tmp) / "data",
            REPO / "test-output" / "bench" / f"stack-{model}.log",
            {
                "ZHIKU_EMBED_LOCAL_MODEL": model,
                "ZHIKU_GENERATE_BACKEND": "extractive",
                "ZHIKU_LOG_LEVEL": "WARNING",
            },
        )
        try:
            with httpx.Client(base_url=stack.url, timeout=300) as http:
                chunks, ingest_s = ingest_passages(http, "bench", passages)

                questions = [(name, q) for name, _, qs in passages for q in qs][:n_queries]
                latencies: list[float] = []
                hits = 0
                for name, question in questions:
                    t0 = time.perf_counter()
                    reply = http.post(
                        "/v1/knowledge_bases/bench/search", json={"query": question, "top_k": 5}
                    )
                    latencies.append((time.perf_counter() - t0) * 1000)
                    hits += name in {hit["file_name"] for hit in reply.raise_for_status().json()["data"]}
        finally:
            stack.stop()
    return {
        "chunks": chunks,
        "ingest_s": ingest_s,
        "chunks_per_s": chunks / ingest_s,
        "search_p50_ms": statistics.median(latencies),
        "search_p99_ms": percentile(latencies, 0.99),
        "recall_at_5": hits / len(questions),
        "queries": len(questions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=60)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["use", "e5"])
    args = parser.parse_args()
    passages = cmrc(args.passages)
    results = {model: run_one(model, passages, args.queries) for model in args.models}
    print(
        f"\nwhole stack, {args.passages} CMRC passages uploaded in one request, searches through the gateway"
    )
    print(
        f"{'model':<6} {'chunks':>6} {'ingest s':>9} {'chunks/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'R@5':>6}"
    )
    for model, r in results.items():
        print(
            f"{model:<6} {r['chunks']:>6} {r['ingest_s']:>9.1f} {r['chunks_per_s']:>9.1f} "
            f"{r['search_p50_ms']:>7.1f} {r['search_p99_ms']:>7.1f} {r['recall_at_5']:>6.3f}"
        )
    if len(results) > 1:
        first, *rest = args.models
        for other in rest:
            ratio = results[first]["chunks_per_s"] / results[other]["chunks_per_s"]
            print(f"ingest speed ratio {first}/{other}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
