"""Embed metrics (``zhiku_embed_*``): batch sizes show whether batching works, texts the load."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EMBED_BATCH_SIZE = Histogram(
    "zhiku_embed_batch_size",
    "Texts per model call (local) or per HTTP request (tei)",
    ["backend"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
# Dynamic batching (batching.py): requests merged into one backend call, and how long each
# request waited for its call to start (the price of batching under load, ~0 when idle).
BATCH_REQUESTS = Histogram(
    "zhiku_embed_batch_requests",
    "Embed requests merged into one backend call by dynamic batching",
    ["backend"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_QUEUE_SECONDS = Histogram(
    "zhiku_embed_batch_queue_seconds",
    "Time a query request waited for its batched backend call to start",
    ["backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EMBED_TEXTS = Counter("zhiku_embed_texts_total", "Texts embedded", ["backend", "kind"])
TEI_RETRIES = Counter(
    "zhiku_embed_tei_retries_total", "TEI requests retried after a transient failure", ["reason"]
)
