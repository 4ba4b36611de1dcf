"""Settings of the retrieve service (environment prefix ``ZHIKU_RETRIEVE_``).

Defaults work embedded: the ``edge`` backend keeps one Qdrant Edge shard per knowledge base
under ``<data_dir>/vectors``; the ``qdrant`` backend needs exactly one of ``qdrant_url`` (a
server, production) or ``qdrant_path`` (qdrant-client's local mode, used by tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings
from services.retrieve.backends import BACKENDS


class RetrieveSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIKU_RETRIEVE_", extra="ignore")

    grpc_port: int = 50052
    metrics_port: int = 9102

    backend: str = "edge"

    # Search limits: top_k 0 (proto3's "unset") means default_top_k.
    default_top_k: int = Field(default=5, ge=1)
    max_top_k: int = Field(default=1000, ge=1)
    # Qdrant's own ceiling for dense vectors.
    max_dimension: int = Field(default=65536, ge=1)

    # Sparse (BM25) encoder: the usual constants and the assumed chunk length in tokens
    # (about a 250-character Chinese chunk cut by jieba; see services/retrieve/sparse.py).
    sparse_k1: float = Field(default=1.2, ge=0)
    sparse_b: float = Field(default=0.75, ge=0, le=1)
    sparse_avg_len: float = Field(default=120.0, gt=0)
    # Chinese word cutter of the sparse encoder: rjieba (Rust, ~19x less CPU per chunk, CMRC
    # recall within 0.5 points) or Python's jieba; reindex after a switch for exact terms.
    sparse_tokenizer: Literal["rjieba", "jieba"] = "rjieba"
    # Hybrid: candidates each of dense and sparse search hands to fusion (at least top_k).
    hybrid_candidates: int = Field(default=50, ge=1)
    # Hybrid: how the two candidate lists are merged when a request does not say (scores.py).
    # dbsf (distribution-based score fusion) measured better than rrf in bench_retrieval.
    hybrid_fusion: Literal["dbsf", "rrf"] = "dbsf"

    # --- edge (embedded Qdrant engine) ---
    # Root of the shards, one directory per knowledge base; default <data_dir>/vectors.
    edge_dir: Path | None = None
    # Threads that run blocking engine calls, so the event loop stays free.
    edge_workers: int = Field(default=4, ge=1)
    # Background index build: wait this long after the last write to a shard (0 disables).
    edge_optimize_delay_s: float = Field(default=10.0, ge=0)
    # ... and, for a collection's first index, only when at least this many points wait: below
    # ~20k points an exact scan costs about a millisecond and beats HNSW at good recall
    # (bench_retrieve). Once a collection has an index, a smaller tail is built as soon as
    # the engine will index it (ShardOptions.tail_to_build: 5,500 points at 512-d).
    edge_optimize_min_unindexed: int = Field(default=20_000, ge=1)
    edge_optimize_timeout_s: float = Field(default=3600.0, gt=0)
    # Niceness of the optimizer child process, so index builds yield CPU to queries.
    edge_optimize_nice: int = Field(default=10, ge=0, le=19)
    # Engine knobs; None keeps the engine's defaults.
    edge_indexing_threshold_kb: int | None = Field(default=None, ge=1)
    edge_search_threads: int | None = Field(default=None, ge=1)
    # HNSW beam width at search time (recall vs latency); None keeps the engine's default.
    edge_hnsw_ef: int | None = Field(default=None, ge=1)

    # --- qdrant (server via qdrant-client; local mode for tests) ---
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_prefer_grpc: bool = True
    # The server's gRPC port (the REST port comes from qdrant_url).
    qdrant_grpc_port: int = Field(default=6334, ge=1, le=65535)
    # Local mode path (or ":memory:"); mutually exclusive with qdrant_url.
    qdrant_path: str | None = None
    qdrant_timeout_s: float = Field(default=10.0, gt=0)
    qdrant_upsert_batch: int = Field(default=256, ge=1)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown retrieve backend {value!r}; choose one of {sorted(BACKENDS)}")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> RetrieveSettings:
        if self.edge_dir is None:
            self.edge_dir = self.common.data_dir / "vectors"
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        if self.backend == "qdrant" and (self.qdrant_url is None) == (self.qdrant_path is None):
            raise ValueError(
                "backend 'qdrant' needs exactly one of qdrant_url (server) or qdrant_path (local mode)"
            )
        return self

    @property
    def shard_root(self) -> Path:
        """edge_dir, resolved (the validator always fills it)."""
        if self.edge_dir is None:  # pragma: no cover - filled by _resolve
            raise RuntimeError("edge_dir unresolved")
        return self.edge_dir
