"""Settings of the ingest API and its Celery worker (prefix ``ZHIKU_INGEST_``).

The API process and the worker read the same settings object, which is what keeps them
pointed at the same catalog, blob directory, broker and queue. Every default works embedded:
a SQLite catalog and blob directory under ``data_dir`` and, without Redis, Celery's SQLAlchemy
transport on that same SQLite file.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from services.common.config import ServiceSettings
from services.ingest.store.secrets import valid_key

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIKU_INGEST_", extra="ignore", validate_by_name=True)

    grpc_port: int = 50054
    metrics_port: int = 9104
    # The Celery worker is a separate process, so it exposes its own /metrics.
    worker_metrics_port: int = 9105

    # The plain ZHIKU_CATALOG_URL / ZHIKU_REDIS_URL are shared with the gateway, hence the aliases.
    catalog_url: str = Field(
        default="",
        validation_alias=AliasChoices("ZHIKU_INGEST_CATALOG_URL", "ZHIKU_CATALOG_URL", "catalog_url"),
    )
    redis_url: str = Field(
        default="",
        validation_alias=AliasChoices("ZHIKU_INGEST_REDIS_URL", "ZHIKU_REDIS_URL", "redis_url"),
    )
    blob_dir: Path | None = None
    queue: str = "zhiku-ingest"

    chunk_size: int = Field(default=250, ge=20, le=20_000)
    chunk_overlap: int = Field(default=50, ge=0)
    # Most texts per Embed call; the worker packs the chunks of all its jobs in flight into
    # calls this large, waiting at most embed_coalesce_ms for more, embed_concurrency at once.
    embed_batch_size: int = Field(default=64, ge=1, le=4096)
    embed_coalesce_ms: float = Field(default=20.0, ge=0, le=1000)
    embed_concurrency: int = Field(default=2, ge=1, le=64)
    upsert_batch_size: int = Field(default=256, ge=1, le=10_000)
    # Jobs the worker runs at once from upload batches (an upload's files travel as one
    # message; their jobs share this pool of threads, across every batch taken). The threads
    # mostly wait (catalog, embed, retrieve); more jobs in flight coalesce into larger catalog
    # transactions and Upserts: 596 against 478 chunks/s with 48 vs 16 (bench-ingest, instant).
    batch_job_threads: int = Field(default=48, ge=1, le=256)
    max_file_mb: float = Field(default=100, gt=0)

    # Deadlines of the worker's calls; embedding a batch on a CPU can take seconds.
    embed_timeout_s: float = Field(default=300.0, gt=0)
    retrieve_timeout_s: float = Field(default=120.0, gt=0)
    # After a migration switched a knowledge base to its new collection, the old one is dropped
    # this much later (by the sweeper, every sweep_interval_s): searches that read the knowledge
    # base's record just before the switch (or from a gateway's cache) still find it.
    migration_drop_delay_s: float = Field(default=10.0, ge=0, le=3600)
    # The worker writes a job's stage and progress to the catalog at most this often.
    progress_interval_s: float = Field(default=0.5, ge=0)
    # How long CreateKnowledgeBase waits for embed.Info before recording no model name.
    embed_info_timeout_s: float = Field(default=3.0, gt=0)
    # Attempts of one job lost to a worker that died under it (killed, out of memory) before
    # the job fails: a file that kills its worker every time. Waits for a dependency (below)
    # do not count.
    max_attempts: int = Field(default=3, ge=1, le=20)
    # A job that finds embed or retrieve unavailable (or past its deadline) goes back to the
    # queue "waiting for" it: retry_backoff_s, then retry_backoff_factor times longer after
    # each failure up to retry_backoff_max_s, until it has waited retry_give_up_s in all
    # (0: fail at the first). Bad input (parse errors, limits) fails at once.
    retry_backoff_s: float = Field(default=5.0, ge=0)
    retry_backoff_factor: float = Field(default=2.0, ge=1)
    retry_backoff_max_s: float = Field(default=120.0, ge=0)
    retry_give_up_s: float = Field(default=1800.0, ge=0)
    # A file whose split yields more chunks fails at once (hours of embedding otherwise).
    max_chunks_per_file: int = Field(default=50_000, ge=1)
    # Redis redelivers a task nobody acknowledged within this time (acks_late).
    visibility_timeout_s: int = Field(default=3600, ge=60)
    # A running job's lease: its worker renews it every lease_s / 4; once it lapses (worker
    # killed) the API's sweeper re-queues the job, long before any broker would redeliver.
    lease_s: float = Field(default=60.0, ge=1)
    # How often the API's sweeper looks for lapsed leases; 0 disables it.
    sweep_interval_s: float = Field(default=10.0, ge=0)
    # A job QUEUED this long is published again (its message may be lost); duplicates are no-ops.
    queued_redeliver_s: float = Field(default=900.0, ge=1)
    # Most recent jobs GET /v1/knowledge_bases/{kb}/jobs returns when the caller names no limit.
    list_jobs_limit: int = Field(default=100, ge=1, le=10_000)
    # SQLite waits this long for a competing writer (API, worker, broker) before failing.
    sqlite_busy_timeout_s: float = Field(default=30.0, gt=0)
    # How often the API refreshes the jobs-by-state gauges from the catalog; 0 disables.
    metrics_refresh_s: float = Field(default=5.0, ge=0)

    # Sources (see docs/guide/sources.md). Directory sources must lie under sources_root (unset:
    # no directory sources); S3 credentials are encrypted with sources_key (a Fernet key).
    sources_root: Path | None = None
    sources_key: str = ""
    # How often the API process queues the syncs whose interval has come; 0 disables schedules.
    sources_sweep_s: float = Field(default=15.0, ge=0)
    # Limits of one S3 or web request, and the web crawler's defaults.
    sources_timeout_s: float = Field(default=20.0, gt=0)
    # Web sources fetch public addresses only unless this is set (intranet sites): a user who may
    # edit a knowledge base must not index the cloud metadata service or internal services.
    sources_allow_private_networks: bool = False
    web_max_depth: int = Field(default=2, ge=0, le=10)
    web_max_pages: int = Field(default=200, ge=1, le=10_000)
    web_max_page_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

    # Picture captions (see docs/guide/formats.md#picture-captions): off unless a base URL is set.
    vision_enabled: bool = Field(
        default=True,
        description="Caption pictures when ZHIKU_INGEST_VISION_BASE_URL is set; false switches "
        "captioning off without removing the endpoint.",
    )
    vision_base_url: str = Field(
        default="",
        description="Base URL of an OpenAI-compatible endpoint serving a vision-capable model "
        "(e.g. http://vllm:8000/v1). Unset: pictures are only OCRed and no call is made.",
    )
    vision_model: str = Field(
        default="", description="Model name sent to the vision endpoint (required with a base URL)."
    )
    vision_api_key: SecretStr = Field(
        default=SecretStr(""), description="Bearer token of the vision endpoint (empty: none)."
    )
    vision_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds one picture's caption may take; a picture past it keeps its OCR text only.",
    )
    vision_concurrency: int = Field(
        default=4, ge=1, le=64, description="Caption requests in flight at once per worker process."
    )
    vision_max_pictures: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Distinct pictures captioned per file (the first ones in reading order); 0: none.",
    )
    vision_max_pixels: int = Field(
        default=1_048_576,
        ge=4096,
        le=64_000_000,
        description="Pictures larger than this many pixels are scaled down before they are sent.",
    )
    vision_max_tokens: int = Field(
        default=200, ge=16, le=4096, description="Longest caption, in tokens (the request's max_tokens)."
    )
    vision_prompt: str = Field(
        default="",
        description="Instruction sent with every picture. Empty: a built-in prompt in the "
        "document's language (Chinese or English), or a bilingual one when the file has no text.",
    )

    @field_validator("sources_key")
    @classmethod
    def _sources_key(cls, value: str) -> str:
        return valid_key(value.strip())

    @field_validator("redis_url", "catalog_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {value!r}")
        return value

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not _QUEUE_NAME.fullmatch(value):
            raise ValueError(f"queue name {value!r} may only hold letters, digits, '.', '_', ':' and '-'")
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> IngestSettings:
        data_dir = self.common.data_dir.resolve()
        if not self.catalog_url:
            self.catalog_url = f"sqlite:///{data_dir / 'catalog.db'}"
        try:
            url = make_url(self.catalog_url)
        except ArgumentError as error:
            raise ValueError(f"catalog_url {self.catalog_url!r} is not a database URL: {error}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"catalog_url must be sqlite or postgresql, got {url.get_backend_name()!r}")
        if url.get_backend_name() == "sqlite" and not url.database:
            raise ValueError("catalog_url must name a SQLite file (the worker is another process)")
        self.blob_dir = (self.blob_dir or data_dir / "blobs").resolve()
        if self.sources_root is not None:
            self.sources_root = self.sources_root.resolve()
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError(
                f"retry_backoff_max_s ({self.retry_backoff_max_s}) must not be below "
                f"retry_backoff_s ({self.retry_backoff_s})"
            )
        if self.redis_url and self.retry_backoff_max_s >= self.visibility_timeout_s:
            # Redis hands a task held back longer than this to another worker meanwhile.
            raise ValueError(
                f"retry_backoff_max_s ({self.retry_backoff_max_s}) must be below "
                f"visibility_timeout_s ({self.visibility_timeout_s})"
            )
        self.vision_base_url = self.vision_base_url.strip()
        if self.vision_base_url and not self.vision_base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"vision_base_url must start with http:// or https://, got {self.vision_base_url!r}"
            )
        if self.vision_base_url and not self.vision_model.strip():
            raise ValueError("vision_model must name the model served at vision_base_url")
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.catalog_url).get_backend_name() == "sqlite"

    @property
    def captions_enabled(self) -> bool:
        """Whether pictures are captioned: an endpoint is configured and not switched off."""
        return self.vision_enabled and bool(self.vision_base_url) and self.vision_max_pictures > 0

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)
