"""Embed metrics (``zhiku_embed_*``): batch sizes show whether batching works, texts the load."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EMBED_BATCH_SIZE = Histogram(
    "zhiku_embed_batch_size",
    "Texts per model call (local) or per HTTP request (tei)",
    ["backend"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
EMBED_TEXTS = Counter("zhiku_embed_texts_total", "Texts embedded", ["backend", "kind"])
TEI_RETRIES = Counter(
    "zhiku_embed_tei_retries_total", "TEI requests retried after a transient failure", ["reason"]
)
