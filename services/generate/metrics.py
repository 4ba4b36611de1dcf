"""Prometheus metrics of the generate service (names as the Grafana dashboard expects).

Every series carries the ``backend`` label, so one dashboard compares llama.cpp, vLLM and an
OpenAI-compatible upstream. Latencies are measured inside the service, from admission (a
free concurrency slot) on: the queue in front shows separately, as its length
(``requests_waiting``), the time admitted calls spent in it (``queue_wait_seconds``) and the
calls it refused (``requests_rejected_total``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
# Decode steps: 5 ms (a fast GPU) to 1 s (a CPU model under load).
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1)

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
ITL = Histogram(
    "zhiku_generate_inter_token_seconds",
    "Time between two consecutive streamed text deltas of one generation",
    ["backend"],
    buckets=ITL_BUCKETS,
)
RUNNING = Gauge("zhiku_generate_requests_running", "Generations in progress", ["backend"])
WAITING = Gauge("zhiku_generate_requests_waiting", "Generations waiting for a slot", ["backend"])

# Up to the default bound on the wait (ZHIKU_GENERATE_MAX_QUEUE_WAIT_S, 30 s) and past it.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
QUEUE_WAIT = Histogram(
    "zhiku_generate_queue_wait_seconds",
    "Time an admitted generation waited for a slot",
    ["backend"],
    buckets=QUEUE_WAIT_BUCKETS,
)
REJECTED = Counter(
    "zhiku_generate_requests_rejected_total",
    "Generations refused with UNAVAILABLE and a retry-after, by reason: queue_full (max_waiting "
    "already queued), wait_estimate (expected wait over the bound), wait_timeout (waited the "
    "whole bound)",
    ["backend", "reason"],
)
ABSTENTIONS = Counter(
    "zhiku_generate_abstentions_total",
    "Grounded answers refused because no passage held enough of the question's rare terms",
    ["backend"],
)
REPETITIONS_CUT = Counter(
    "zhiku_generate_repetitions_cut_total",
    "Answers ended early because the model started repeating a sentence or looping on a phrase",
    ["backend"],
)
