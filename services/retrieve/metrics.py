"""Prometheus metrics of the retrieve service (request counts/latency come from common)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPSERTED_POINTS = Counter("zhiku_retrieve_upserted_points_total", "Points written by Upsert", ["backend"])
DELETED_POINTS = Counter("zhiku_retrieve_deleted_points_total", "Points removed by DeleteByFile", ["backend"])
SEARCH_HITS = Histogram(
    "zhiku_retrieve_search_hits",
    "Hits returned per Search",
    ["backend"],
    buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100, 1000),
)
OPEN_SHARDS = Gauge("zhiku_retrieve_open_shards", "Edge shards currently open")
OPTIMIZE_RUNS = Counter(
    "zhiku_retrieve_optimize_total", "Edge index builds by outcome", ["outcome"]
)  # optimized | unchanged | failed
OPTIMIZE_SECONDS = Histogram(
    "zhiku_retrieve_optimize_seconds",
    "Edge index build time (child process), swap included",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
# Points whose sparse vector this service computed from the text instead of taking the
# writer's: "absent" (a writer that sends none) or "mismatch" (computed with another encoder
# spec: the service was reconfigured, or the writer runs other tokenizer releases). Either
# costs the GIL time of encoding here, which writers were given the work to spare.
SPARSE_ENCODED_HERE = Counter(
    "zhiku_retrieve_sparse_encoded_points_total",
    "Upserted points whose sparse vector the retrieve service encoded itself",
    ["reason"],
)  # absent | mismatch
# Edge writes give way to searches in flight (edge_priority.py): how long write slices waited.
WRITE_YIELD = Histogram(
    "zhiku_retrieve_write_yield_seconds",
    "Time an edge write slice waited for searches in flight",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
