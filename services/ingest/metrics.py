"""Prometheus metrics of the ingest API and worker (``zhiku_ingest_*``).

The worker counts what it did (jobs finished by outcome, stage latencies, chunks indexed);
the API process publishes the catalog's view (jobs by state, queue depth), which is the one
number that stays right whichever worker, or none, is running.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

JOBS_FINISHED = Counter(
    "zhiku_ingest_jobs_finished_total", "Ingest jobs the worker finished, by outcome", ["state"]
)
JOB_SECONDS = Histogram(
    "zhiku_ingest_job_seconds", "Wall time of one ingest job attempt", buckets=(*LATENCY_BUCKETS, 300, 600)
)
STAGE_SECONDS = Histogram(
    "zhiku_ingest_stage_seconds",
    "Time spent per ingest stage (parse, split, embed, index; sparse: the sparse vectors, within index)",
    ["stage"],
    buckets=(*LATENCY_BUCKETS, 300, 600),
)
CHUNKS_INDEXED = Counter("zhiku_ingest_chunks_indexed_total", "Chunks upserted into the vector store")
EMBED_BATCH_TEXTS = Histogram(
    "zhiku_ingest_embed_batch_texts",
    "Texts per Embed call made by the worker",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
JOB_RETRIES = Counter("zhiku_ingest_job_retries_total", "Attempts re-queued after a transient failure")
JOBS_REPUBLISHED = Counter(
    "zhiku_ingest_jobs_republished_total",
    "Jobs the sweeper published again: their worker's lease lapsed or their message was lost",
)

JOBS_BY_STATE = Gauge("zhiku_ingest_jobs", "Ingest jobs in the catalog, by state", ["state"])
QUEUE_DEPTH = Gauge("zhiku_ingest_queue_depth", "Ingest jobs waiting for a worker (state queued)")
PICTURE_CAPTIONS = Counter(
    "zhiku_ingest_picture_captions_total",
    "Pictures sent to the vision endpoint, by outcome (captioned, failed, timeout, skipped); "
    "a picture without a caption keeps its OCR text and its job still succeeds",
    ["outcome"],
)
