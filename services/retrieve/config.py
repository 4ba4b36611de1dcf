"""Settings of the retrieve service (environment prefix ``ZHIKU_RETRIEVE_``).

Defaults work embedded: the ``edge`` backend keeps one Qdrant Edge shard per knowledge base
under ``<data_dir>/vectors``; the ``qdrant`` backend needs exactly one of ``qdrant_url`` (a
server, production) or ``qdrant_path`` (qdrant-client's local mode, used by tests), and takes
its cluster layout (shards, replicas, on-disk storage, quantization, write ordering, retries)
and its tenancy layout (a collection per knowledge base, or shared collections) from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings
from services.common.names import kb_name_error
from services.retrieve.backends import BACKENDS

# Characters Qdrant refuses in collection names (they are directory names on the server), plus
# the whitespace and '%' that would need escaping in REST paths.
_QDRANT_FORBIDDEN = '<>:"/\\|?*\x00 %#'
# Leaves room for the "_<dimension>" suffix within Qdrant's 255-byte limit.
_SHARED_MAX_CHARS = 200


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
    # (about a 250-character Chinese chunk cut by jieba; see services/common/sparse.py).
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
    # How long a thread may keep the GIL while another waits for it, set for the process
    # while the edge backend runs (Python's default, 5 ms). An engine call holds the GIL until
    # it returns, so a search waits for writes in other threads at each of its ~30 engine
    # calls. 1 ms measured mixed on the quiet 2-core box: at 100k it cut search p99 with a
    # writer flat out (27.5-30.4 against 42.4-46.8 ms, two runs each), at 1M it raised p50
    # (idle 14.0-15.2 against 12.9 ms, flat out 24.7-30.4 against 25.8; docs/benchmarks/scale.md).
    edge_switch_interval_ms: float = Field(default=5.0, gt=0, le=100)
    # Searches first: a write slice (64 points) waits while a search is in flight, at most
    # this long (0: writes never wait). Engine calls hold the GIL, so a slice between two of
    # a search's calls adds its length to the search (edge_priority.py; docs/benchmarks/scale.md).
    edge_write_yield_ms: float = Field(default=50.0, ge=0, le=1000)
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
    # Threads the engine splits one search over. 1: a search holds the GIL anyway (two
    # threads searching a shard measured no faster than one), and handing one small search to
    # a pool cost more than it saved: 1.12 against 1.64 ms on a 10k-point 384-d shard, 0.34
    # against 0.52 ms on 2k points (None: the engine's default pool).
    edge_search_threads: int | None = Field(default=1, ge=1)
    # HNSW beam width at search time (recall vs latency); None keeps the engine's default.
    # Lowering it saved little: 0.43 -> 0.39 ms per 10k-point shard at 64, for a recall@50
    # of 0.995 against 0.998 (docs/benchmarks/scale.md).
    edge_hnsw_ef: int | None = Field(default=None, ge=1)
    # Scalar (int8) quantization of the dense vectors of indexed segments: HNSW walks 4x
    # smaller vectors (a search over many shards misses the CPU caches less), then rescores
    # its best oversampling x limit with the originals. make bench-shard-search, 100k in 10
    # shards: 0.21 against 0.34 ms an ask, dense recall@50 against exact 0.9985 against
    # 0.9981 (held-out questions; without oversampling it fell to 0.954). Costs a quarter of
    # the vectors' size on disk and in RAM.
    # A change applies to segments as the optimizer next rebuilds them.
    edge_quantization: Literal["none", "int8"] = "int8"
    edge_quantization_oversampling: float = Field(default=2.0, ge=1.0)
    # Sharding (services/retrieve/backends/edge_collection.py): the write shard is sealed, and
    # a new one started, once it holds max(edge_shard_points, edge_shard_growth x the points
    # of the sealed shards). An index build works on a copy of one shard, about 1.5 times that
    # shard's size on disk at its peak (copy plus the new segments; bench_scale), so the extra
    # disk of a build stays near 1.5 x growth / (1 + growth) of the knowledge base (15% at 0.1
    # measured at 100k); shards grow with the knowledge base, so a search (which asks every
    # shard) meets about 11 at 100k points and 34 at 1M with the defaults.
    edge_shard_points: int = Field(default=10_000, ge=1)
    edge_shard_growth: float = Field(default=0.1, ge=0)
    # Sealed shards are merged in the background while their points together stay within
    # this fraction of the knowledge base (edge_merge.py), so a search asks fewer shards;
    # a merge's extra disk is about twice it. 0 turns merging off.
    edge_merge_fraction: float = Field(default=0.1, ge=0, le=0.5)

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
    # Where knowledge bases live: per_collection (one Qdrant collection each) or shared (many in
    # one collection per vector dimension, partitioned by a `kb` payload field indexed with
    # is_tenant, as Qdrant advises for many tenants). File-chat knowledge bases (`tmp_` names)
    # always use the shared collections.
    qdrant_layout: Literal["per_collection", "shared"] = "per_collection"
    # Name prefix of the shared collections (`<prefix>_<dimension>`); must not be a valid
    # knowledge base name, so it can never collide with a per-collection one.
    qdrant_shared_collection: str = "zhiku~shared"
    # HNSW of the shared collections: m 0 and a positive payload_m build one graph per tenant
    # instead of a global one (every query there is filtered by tenant anyway).
    qdrant_shared_hnsw_m: int = Field(default=0, ge=0)
    # Links per point in each tenant's own HNSW graph of a shared collection.
    qdrant_shared_payload_m: int = Field(default=16, ge=1)
    # Sparse (BM25) IDF statistics over the knowledge base's own points in a shared collection,
    # as in its own collection (needs Qdrant >= 1.19); false: over the whole shared collection.
    qdrant_tenant_idf: bool = True
    # Shards of each new collection (spread over the cluster's nodes); None: the server's default.
    qdrant_shard_number: int | None = Field(default=None, ge=1)
    # Copies of each shard on different nodes; None keeps the server's default (1).
    qdrant_replication_factor: int | None = Field(default=None, ge=1)
    # Replicas that must confirm a write before it succeeds (at most replication_factor).
    qdrant_write_consistency_factor: int | None = Field(default=None, ge=1)
    # Keep dense vectors (and the sparse index) memory-mapped on disk instead of in RAM.
    qdrant_on_disk_vectors: bool = False
    # Keep payloads on disk (read on demand); None keeps the server's default.
    qdrant_on_disk_payload: bool | None = None
    # Scalar quantization of dense vectors (int8: 4x less RAM); searches then rescore the
    # oversampled candidates with the original vectors.
    qdrant_quantization: Literal["none", "int8"] = "none"
    # Quantile of values kept in the int8 range (outliers are clipped); None: the whole range.
    qdrant_quantization_quantile: float | None = Field(default=0.99, ge=0.5, le=1.0)
    # Keep the quantized vectors in RAM even when the originals are on disk.
    qdrant_quantization_always_ram: bool = True
    # Rescore the quantized search's candidates with the original vectors.
    qdrant_quantization_rescore: bool = True
    # Candidates fetched from the quantized index per result, before rescoring.
    qdrant_quantization_oversampling: float = Field(default=2.0, ge=1.0)
    # Write ordering of upserts and deletes across replicas: strong goes through the shard's
    # permanent leader, so replicas apply writes in one order and counts agree on every replica.
    qdrant_write_ordering: Literal["weak", "medium", "strong"] = "strong"
    # Replicas a search reads from (all, majority, quorum); None: one (the server's default).
    qdrant_read_consistency: Literal["all", "majority", "quorum"] | None = None
    # Attempts per call on transient failures (UNAVAILABLE, 5xx, timeouts, connection reset;
    # never 4xx), waiting an exponentially growing, jittered backoff between them.
    qdrant_retry_attempts: int = Field(default=4, ge=1)
    # First backoff scale (doubling each attempt, randomised below it) ...
    qdrant_retry_backoff_s: float = Field(default=0.2, ge=0)
    # ... and the longest single wait.
    qdrant_retry_backoff_max_s: float = Field(default=5.0, ge=0)

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
        if self.qdrant_write_consistency_factor is not None and self.qdrant_write_consistency_factor > (
            self.qdrant_replication_factor or 1
        ):
            raise ValueError(
                "qdrant_write_consistency_factor must not exceed qdrant_replication_factor (default 1)"
            )
        return self

    @field_validator("qdrant_shared_collection")
    @classmethod
    def _not_a_kb_name(cls, value: str) -> str:
        if kb_name_error(value) is None:
            raise ValueError(
                f"qdrant_shared_collection {value!r} is a valid knowledge base name and could collide "
                "with one: include a character knowledge base names cannot hold, such as '~'"
            )
        if not value or any(ch in _QDRANT_FORBIDDEN for ch in value) or len(value) > _SHARED_MAX_CHARS:
            raise ValueError(
                f"qdrant_shared_collection {value!r} is not a usable Qdrant collection name "
                f"(1..{_SHARED_MAX_CHARS} characters, none of {_QDRANT_FORBIDDEN!r})"
            )
        return value

    @property
    def shard_root(self) -> Path:
        """edge_dir, resolved (the validator always fills it)."""
        if self.edge_dir is None:  # pragma: no cover - filled by _resolve
            raise RuntimeError("edge_dir unresolved")
        return self.edge_dir
