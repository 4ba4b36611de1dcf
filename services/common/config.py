"""Settings shared by every process, read once from the environment (prefix ``ZHIKU_``).

Each service subclasses :class:`ServiceSettings` with its own prefix (``ZHIKU_EMBED_`` ...),
so one environment can configure the whole stack without name clashes, while the values
every process needs (where the data lives, where the other services listen) stay in
:class:`CommonSettings` under the plain ``ZHIKU_`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Values every process of the stack needs."""

    model_config = SettingsConfigDict(env_prefix="ZHIKU_", extra="ignore")

    data_dir: Path = Path("data")
    log_level: str = "INFO"
    log_json: bool = True
    # uvloop when installed ("auto"), or asyncio's own loop ("asyncio"): see event_loop.py.
    event_loop: Literal["auto", "asyncio"] = "auto"
    embed_addr: str = "127.0.0.1:50051"
    retrieve_addr: str = "127.0.0.1:50052"
    generate_addr: str = "127.0.0.1:50053"
    ingest_addr: str = "127.0.0.1:50054"
    # Uploads travel to the ingest service inside one message, so the limit is generous.
    grpc_max_message_mb: int = Field(default=256, ge=4)
    # Deadline applied by clients and enforced by servers when a caller sent none.
    grpc_default_timeout_s: float = Field(default=60.0, gt=0)
    # OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); empty turns tracing off.
    otel_endpoint: str = ""
    # service.namespace resource attribute, grouping this stack's services in a tracing backend.
    otel_service_namespace: str = "zhiku"


class ServiceSettings(BaseSettings):
    """Fields every gRPC service process has; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="ZHIKU_SERVICE_", extra="ignore")

    grpc_host: str = "0.0.0.0"
    grpc_port: int = 0
    # Port of the Prometheus /metrics HTTP endpoint; 0 disables it.
    metrics_port: int = 0
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    common: CommonSettings = Field(default_factory=CommonSettings)
