"""Gateway settings (prefix ``ZHIKU_GATEWAY_``), read once and injected, never read ad hoc."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.config import CommonSettings


class GatewaySettings(BaseSettings):
    """What the HTTP front door needs: where to listen, limits, deadlines and API keys."""

    model_config = SettingsConfigDict(env_prefix="ZHIKU_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Limit on a whole request body (all files of one upload together, multipart included);
    # enforced on Content-Length before the body is read, and again while it streams in.
    max_upload_mb: int = Field(default=100, ge=1)
    # Deadline of every gRPC call except generation.
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Deadline of one whole generation (a streamed answer included).
    chat_timeout_s: float = Field(default=300.0, gt=0)
    # Per-service health check deadline of /readyz: short, probes must answer fast.
    readyz_timeout_s: float = Field(default=2.0, gt=0)
    default_top_k: int = Field(default=5, ge=1, le=100)
    # Comma-separated Bearer tokens; empty leaves the API open (local use).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds uvicorn lets requests in flight finish on SIGTERM.
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    common: CommonSettings = Field(default_factory=CommonSettings)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept ``"k1,k2"`` from the environment as well as a list from code."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024
