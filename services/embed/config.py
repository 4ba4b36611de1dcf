"""Settings of the embed service, read from ``ZHIKU_EMBED_*``.

Defaults run embedded and offline (a bundled model, no network); production switches to
TEI with ``ZHIKU_EMBED_BACKEND=tei`` and ``ZHIKU_EMBED_TEI_URL``. Validators fail at start,
not on the first request, so a bad deployment never reports itself ready.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Self, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.config import ServiceSettings

BackendName = Literal["local", "tei"]
LocalModelName = Literal["e5", "use"]


class EmbedSettings(ServiceSettings):
    """Everything the embed process needs; injected into the backend, never read ad hoc."""

    model_config = SettingsConfigDict(env_prefix="ZHIKU_EMBED_", extra="ignore")

    grpc_port: int = 50051
    metrics_port: int = 9101

    backend: BackendName = "local"
    # Picked by bench/bench_embed.py: e5 retrieves far better (recall@1 0.96 vs 0.76 on
    # CMRC 2018 zh, 0.87 vs 0.67 on SQuAD en); USE embeds 30-40x faster (55 vs 1.5 Chinese
    # passages/s on 2 cores), so pick ``use`` for large corpora on small boxes.
    local_model: LocalModelName = "e5"
    # Texts per model call of the local backend (TEI requests are split at TEI's own
    # max_client_batch_size). Each batch is queued on its own, so a query waits for at most
    # one batch of a concurrent ingest call, not the whole call: with e5 a batch of 8
    # Chinese chunks is a few seconds. USE throughput is flat from 8 to 32 (bench_embed).
    batch_size: int = Field(default=8, ge=1, le=4096)
    # Dynamic batching (batching.py): the query texts of concurrent Embed calls go to the
    # backend together, up to this many per call (local: per model call; tei: per request,
    # then cut at TEI's limit); 1 turns it off, every call runs on its own. Passages are
    # not merged: ingest already packs them (ZHIKU_INGEST_EMBED_BATCH_SIZE). 32 short
    # questions take one model call of 14 ms with USE (2,300/s against 545/s one by one);
    # e5 gains less (94/s against 73/s: its cost is per token), most of it under load.
    batch_max_texts: int = Field(default=32, ge=1, le=4096)
    # How long a query that finds the backend idle waits for company before it starts. 0:
    # start at once and merge whatever arrives while the backend is busy (continuous
    # batching, as TEI does), which under load fills batches without any added wait.
    batch_window_ms: float = Field(default=0.0, ge=0, le=1000)
    # CPU threads for the bundled models; 0 means every core of the machine. e5 spreads each
    # batch over them; USE runs this many batches at once, one thread each (models/__init__.py).
    local_threads: int = Field(default=0, ge=0, le=256)
    # Let the bundled model's idle threads spin-wait for work instead of sleeping (OpenMP's
    # default for e5, onnxruntime's allow_spinning for USE). Spinning saves ~10 ms on a lone
    # e5 query on an idle box, but on shared cores a spinning thread takes the CPU that the
    # other services, and the model's own other thread, need next: with another process busy
    # on one of 2 cores, a lone e5 query took 45-270 ms and ~200 ms of CPU spinning, against
    # 22-30 ms and ~27 ms sleeping (models/e5.py).
    local_spin_wait: bool = False
    # More models served next to the default one, so a knowledge base can move to another
    # model without downtime (POST /v1/knowledge_bases/{kb}/migrate) while others keep theirs.
    # Each entry is a bundled model name (e5, use) or a TEI URL; comma-separated or a JSON
    # list. Requests name a model by that entry or by the model id it reports.
    extra_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Override the bundled USE ONNX file (tests, a newer export); None finds it in its package.
    use_model_path: Path | None = None

    # Request limits: more texts per call, or longer texts, get INVALID_ARGUMENT. Info
    # reports max_texts_per_call as max_batch_size. 64 e5 passages of ~360 tokens take
    # ~20-40 s on 2 cores, inside the default 60 s deadline.
    max_texts_per_call: int = Field(default=64, ge=1, le=100_000)
    # Recent query embeddings kept in memory (LRU): a repeated question skips the model.
    query_cache_size: int = Field(default=2048, ge=0)
    # Local reranker: weight of lexical overlap against embedding similarity (rerank.py).
    rerank_lexical_weight: float = Field(default=0.3, ge=0, le=1)
    max_text_chars: int = Field(default=32_768, ge=1)

    tei_url: str = ""
    tei_timeout_s: float = Field(default=30.0, gt=0)
    tei_connect_timeout_s: float = Field(default=5.0, gt=0)
    tei_max_retries: int = Field(default=3, ge=0, le=20)
    # First backoff between retries; doubles up to tei_backoff_max_s.
    tei_backoff_s: float = Field(default=0.5, ge=0)
    tei_backoff_max_s: float = Field(default=8.0, ge=0)
    # Sub-batches of one call sent to TEI at the same time (TEI batches them on the GPU).
    tei_max_concurrency: int = Field(default=4, ge=1, le=256)
    # e5 wants "query: " / "passage: ", bge-zh wants a query instruction; TEI adds nothing.
    tei_query_prefix: str = ""
    tei_passage_prefix: str = ""
    # TEI's --api-key, sent as a Bearer token when set.
    tei_api_key: SecretStr | None = None

    @field_validator("tei_url")
    @classmethod
    def _strip_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"tei_url must start with http:// or https://, got {value!r}")
        return value

    @field_validator("extra_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("extra_models")
    @classmethod
    def _check_models(cls, value: list[str]) -> list[str]:
        bundled = get_args(LocalModelName)
        cleaned = []
        for entry in value:
            entry = entry.strip().rstrip("/")
            if entry not in bundled and not entry.startswith(("http://", "https://")):
                raise ValueError(
                    f"extra model {entry!r} is neither a bundled model ({', '.join(bundled)}) "
                    "nor a TEI URL (http:// or https://)"
                )
            cleaned.append(entry)
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"extra_models names a model twice: {cleaned}")
        return cleaned

    def extra_model_settings(self) -> list[tuple[str, EmbedSettings]]:
        """(entry, settings) per extra model: these settings with the backend pointed at it."""
        return [
            (
                entry,
                self.model_copy(
                    update={"backend": "local", "local_model": entry}
                    if entry in get_args(LocalModelName)
                    else {"backend": "tei", "tei_url": entry}
                ),
            )
            for entry in self.extra_models
        ]

    @model_validator(mode="after")
    def _check_backend(self) -> Self:
        if self.backend == "tei" and not self.tei_url:
            raise ValueError("ZHIKU_EMBED_TEI_URL is required when ZHIKU_EMBED_BACKEND=tei")
        if self.batch_size > self.max_texts_per_call:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed max_texts_per_call "
                f"({self.max_texts_per_call})"
            )
        if self.use_model_path is not None and not self.use_model_path.is_file():
            raise ValueError(f"use_model_path {self.use_model_path} is not a file")
        return self
