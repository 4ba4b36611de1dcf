"""Prometheus metrics of the generate service (names as the Grafana dashboard expects)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

TOKENS = Counter(
    "zhiku_generate_tokens_total",
    "Tokens processed: direction in = prompt, out = completion",
    ["backend", "direction"],
)
TTFT = Histogram(
    "zhiku_generate_ttft_seconds",
    "Time from admission to the first streamed token",
    ["backend"],
    buckets=TTFT_BUCKETS,
)
RUNNING = Gauge("zhiku_generate_requests_running", "Generations in progress", ["backend"])
WAITING = Gauge("zhiku_generate_requests_waiting", "Generations waiting for a slot", ["backend"])
