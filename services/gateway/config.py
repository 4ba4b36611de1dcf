"""Gateway settings (prefix ``ZHIKU_GATEWAY_``), read once and injected, never read ad hoc."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.config import CommonSettings


class GatewaySettings(BaseSettings):
    """What the HTTP front door needs: where to listen, limits, deadlines and API keys."""

    model_config = SettingsConfigDict(env_prefix="ZHIKU_GATEWAY_", extra="ignore", validate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Limit on a whole request body (all files of one upload together, multipart included);
    # enforced on Content-Length before the body is read, and again while it streams in.
    max_upload_mb: int = Field(default=100, ge=1)
    # Longest wait for the next piece of a request body: a client that stops sending mid-body
    # gets 408 and its connection back, instead of holding it open indefinitely.
    body_read_timeout_s: float = Field(default=30.0, gt=0)
    # Deadline of every gRPC call except generation.
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Deadline of one whole generation (a streamed answer included).
    chat_timeout_s: float = Field(default=300.0, gt=0)
    # Per-service health check deadline of /readyz: short, probes must answer fast.
    readyz_timeout_s: float = Field(default=2.0, gt=0)
    default_top_k: int = Field(default=5, ge=1, le=100)
    # Searches reuse a non-empty knowledge base's catalog record this long (kb_cache.py);
    # 0 asks the catalog on every search.
    kb_cache_ttl_s: float = Field(default=2.0, ge=0, le=300)
    # Comma-separated Bearer tokens; empty leaves the API open (local use).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds uvicorn lets requests in flight finish on SIGTERM.
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # Database of conversations, feedback, API keys and file chats (tables prefixed ``gw_``);
    # the plain ZHIKU_CATALOG_URL is shared with ingest, so one database holds everything.
    # Empty: the ingest catalog's default SQLite file under the data dir.
    catalog_url: str = Field(
        default="",
        validation_alias=AliasChoices("ZHIKU_GATEWAY_CATALOG_URL", "ZHIKU_CATALOG_URL", "catalog_url"),
    )
    # Requests per minute for keys without their own limit (environment keys included); 0 = none.
    default_rate_limit_per_minute: int = Field(default=0, ge=0)
    admin_email: str = Field(
        default="",
        max_length=320,
        description=(
            "Email of the first admin, created at start when no user has it (with "
            "ZHIKU_GATEWAY_ADMIN_PASSWORD, or signing in through SSO); an existing user of that "
            "email is made admin. Any user closes an open gateway."
        ),
    )
    admin_password: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Password of the first admin (hashed with argon2 when the user is created; later changes "
            "go through the API). Empty: the admin signs in through SSO only."
        ),
    )
    session_ttl_s: float = Field(
        default=43_200.0,
        gt=0,
        description="Lifetime of a web sign-in session in seconds (then the user signs in again).",
    )
    session_cookie_secure: bool | None = Field(
        default=None,
        description=(
            "Mark the session cookie Secure (sent over HTTPS only). Unset: Secure when the sign-in "
            "request came over HTTPS (as seen by uvicorn, proxy headers included)."
        ),
    )
    user_rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description=(
            "Requests per minute of one user, counted over their sessions and all their keys together "
            "(on top of each key's own limit); 0 = none."
        ),
    )
    uploads_per_day: int = Field(
        default=0,
        ge=0,
        description=(
            "Upload requests (files, file chats, Chatchat uploads) per 24 hours, counted per key and per "
            "user; past it 429 with Retry-After. 0 = none."
        ),
    )
    # Redis shared by the replicas for rate limits (the plain ZHIKU_REDIS_URL, as ingest uses);
    # empty: each replica counts its own requests.
    redis_url: str = Field(
        default="",
        validation_alias=AliasChoices("ZHIKU_GATEWAY_REDIS_URL", "ZHIKU_REDIS_URL", "redis_url"),
    )
    # Proxies (addresses or CIDR ranges, comma-separated, "*" for any) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed: the client address the audit trail records is then the one
    # they forward. Requests from anywhere else keep their own address, whatever they claim.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1"])
    # Days the audit trail keeps an entry (older ones are deleted as new ones are written); 0 = forever.
    audit_retention_days: float = Field(default=365.0, ge=0)
    # Browser origins allowed by CORS (comma-separated, "*" for any); empty = no CORS headers.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Lifetime of a file chat's temporary knowledge base, and how often expired ones are swept.
    file_chat_ttl_s: float = Field(default=3600.0, gt=0)
    file_chat_sweep_interval_s: float = Field(default=60.0, gt=0)
    # Stored messages of a conversation put in front of a new turn (the latest ones); 0 = none.
    conversation_history_messages: int = Field(default=20, ge=0, le=1000)
    # Models served by generate services of their own (the chart's one Deployment per model):
    # model name -> host:port, as JSON ({"qwen": "zhiku-generate-qwen:50053"}). A request
    # naming one goes there, every other to ZHIKU_GENERATE_ADDR; GET /v1/models lists them all.
    generate_model_addrs: dict[str, str] = Field(default_factory=dict)
    # The model that makes follow-ups standalone for retrieval (sent to its address); empty:
    # the generate service at ZHIKU_GENERATE_ADDR picks (ZHIKU_GENERATE_REWRITE_MODEL).
    rewrite_model: str = ""
    agent_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["search_knowledge_base", "calculate"],
        description=(
            "Built-in agent tools enabled in this deployment (comma-separated): search_knowledge_base, "
            "calculate, search_internet, read_url, text2sql (with describe_database). search_internet "
            "and read_url need outbound network; text2sql needs agent_sql_databases."
        ),
    )
    agent_tool_timeout_s: float = Field(
        default=15.0, gt=0, description="Time limit of one search_internet or read_url call, in seconds."
    )
    agent_search_provider: Literal["searxng", "bing", "tavily", "duckduckgo"] = Field(
        default="searxng", description="The search_internet provider: searxng, bing, tavily or duckduckgo."
    )
    agent_search_url: str = Field(
        default="",
        description=(
            "The search provider's endpoint: a SearXNG instance's base URL (required for searxng); "
            "empty uses the public API of bing, tavily or duckduckgo."
        ),
    )
    agent_search_api_key: str = Field(
        default="", description="API key of the search provider (required for bing and tavily)."
    )
    agent_search_max_results: int = Field(
        default=5, ge=1, le=20, description="Results search_internet returns when the model asks no number."
    )
    agent_read_url_max_bytes: int = Field(
        default=2_000_000,
        ge=1024,
        description="Bytes of a page read_url downloads at most (the rest is cut).",
    )
    agent_read_url_max_chars: int = Field(
        default=20_000, ge=100, description="Characters of a page's text read_url gives the model at most."
    )
    agent_read_url_allow_private: bool = Field(
        default=False,
        description=(
            "Let read_url fetch loopback, private, link-local and reserved addresses (intranet pages); "
            "off by default, so a model cannot reach internal services or cloud metadata."
        ),
    )
    agent_sql_databases: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Databases text2sql may query, as JSON mapping a name to a SQLAlchemy URL, e.g. "
            '{"sales": "postgresql+psycopg://reader@db/sales", "stock": "sqlite:////data/stock.db"}. '
            "PostgreSQL and SQLite; connections are read-only. Use an account that can only read."
        ),
    )
    agent_sql_timeout_s: float = Field(
        default=10.0, gt=0, description="Statement timeout of a text2sql query, in seconds."
    )
    agent_max_steps: int = Field(
        default=6, ge=1, le=20, description="Tool rounds an agent run may take before the model must answer."
    )
    agent_time_limit_s: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock limit of one agent run (model calls and tools), in seconds.",
    )
    agent_sql_max_rows: int = Field(
        default=200, ge=1, le=10_000, description="Rows a text2sql query returns at most (the rest is cut)."
    )
    common: CommonSettings = Field(default_factory=CommonSettings)

    @field_validator("api_keys", "cors_origins", "agent_tools", "trusted_proxies", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept ``"k1,k2"`` from the environment as well as a list from code."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _default_catalog(self) -> GatewaySettings:
        """Same default file as the ingest catalog, so the embedded stack has one database."""
        self.catalog_url = (
            self.catalog_url.strip() or f"sqlite:///{self.common.data_dir.resolve() / 'catalog.db'}"
        )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024
