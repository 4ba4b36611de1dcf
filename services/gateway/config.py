"""Gateway settings (prefix ``ZHIKU_GATEWAY_``), read once and injected, never read ad hoc."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.config import CommonSettings
from services.common.names import kb_name_error

KnowledgeBaseRole = Literal["viewer", "editor", "owner"]


class SsoGrant(BaseModel):
    """What one group of the identity provider gives its members in Zhiku.

    ``group``: the Zhiku group they belong to (created when missing; membership follows the
    claim at every sign-in). ``knowledge_bases``: roles that Zhiku group holds, granted at sign-in.
    ``admin``: members are global admins (and non-members who signed in by SSO are not).
    """

    model_config = {"extra": "forbid"}

    group: str | None = None
    admin: bool = False
    knowledge_bases: dict[str, KnowledgeBaseRole] = Field(default_factory=dict)

    @field_validator("group")
    @classmethod
    def _group_slug(cls, value: str | None) -> str | None:
        """The same slug rule as ``POST /v1/groups`` (imported here: schemas import the store)."""
        from services.gateway.schemas.identity import GROUP_PATTERN

        if value is not None and not re.fullmatch(GROUP_PATTERN, value):
            raise ValueError(f"group {value!r} is not a group name (lower-case letters, digits, _ and -)")
        return value

    @model_validator(mode="after")
    def _gives_something(self) -> SsoGrant:
        if self.knowledge_bases and self.group is None:
            raise ValueError("knowledge_bases roles are held by a group: name the Zhiku group too")
        if self.group is None and not self.admin:
            raise ValueError('an entry must name a Zhiku "group" or set "admin": true')
        for name in self.knowledge_bases:
            problem = kb_name_error(name)
            if problem is not None:
                raise ValueError(f"knowledge base {name!r}: {problem}")
        return self


class OidcSettings(BaseSettings):
    """Single sign-on with any OpenID Connect provider (authorization code flow with PKCE).

    Off while ``ZHIKU_GATEWAY_OIDC_ISSUER`` is empty. Register the gateway at the provider as a
    web application whose redirect URI is ``<gateway>/v1/auth/oidc/callback``.
    """

    model_config = SettingsConfigDict(env_prefix="ZHIKU_GATEWAY_OIDC_", extra="ignore")

    # The provider's issuer URL (its discovery document is <issuer>/.well-known/openid-configuration);
    # empty turns single sign-on off.
    issuer: str = ""
    client_id: str = ""
    # Client secret from the provider; empty for a public client (PKCE alone).
    client_secret: SecretStr = SecretStr("")
    # Scopes asked for (comma-separated); "openid" is always sent. Add "groups" (or what the
    # provider calls it) when group claims come only with their own scope.
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["openid", "email", "profile"])
    # The callback URL registered at the provider; empty: this gateway's own address as the
    # browser reached it + /v1/auth/oidc/callback (set it behind a proxy that rewrites hosts).
    redirect_url: str = ""
    # Name of the provider on the sign-in page's button ("Sign in with <label>", e.g. "Acme ID");
    # empty: "Sign in with SSO".
    label: str = ""
    # Claim with the user's email (Entra ID without the email claim: "preferred_username").
    email_claim: str = "email"
    # Claim with the user's display name (the email is used when it is missing).
    name_claim: str = "name"
    # Claim with the user's groups at the provider: a list of names (a dotted path reaches into
    # objects, e.g. Keycloak's "realm_access.roles"); empty: groups are not synchronised.
    groups_claim: str = "groups"
    group_map: dict[str, SsoGrant] = Field(
        default_factory=dict,
        description=(
            "Provider group -> what its members get, as JSON: "
            '{"rag-admins": {"admin": true}, "finance": {"group": "finance", '
            '"knowledge_bases": {"finance-reports": "viewer"}}}. "group": the Zhiku group members '
            'join (membership follows the claim at each sign-in); "knowledge_bases": roles that '
            'group holds; "admin": members are global admins. Unmapped provider groups are ignored.'
        ),
    )
    # First SSO sign-in of an unknown email creates the user (no password); false: only users an
    # admin created may sign in by SSO.
    auto_create_users: bool = True
    # Email domains that may sign in (comma-separated, e.g. "example.com,example.cn"); empty: any
    # the provider vouches for. Set it with providers open to the public (Google accounts).
    email_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Key that signs the short-lived cookie carrying state, nonce and PKCE verifier from the
    # login redirect to the callback; empty: derived from the client secret (every replica with
    # the same secret agrees). A public client without a secret needs it when replicas > 1.
    state_secret: SecretStr = SecretStr("")

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        if isinstance(value, str):
            return [scope.strip() for scope in value.replace(" ", ",").split(",") if scope.strip()]
        return value

    @field_validator("email_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(domain).strip().lower().lstrip("@") for domain in value if str(domain).strip()]
        return value

    @field_validator("scopes", mode="after")
    @classmethod
    def _openid_first(cls, value: list[str]) -> list[str]:
        return ["openid", *(scope for scope in value if scope != "openid")]

    @field_validator("issuer", "redirect_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _client_named(self) -> OidcSettings:
        if self.issuer and not self.client_id:
            raise ValueError("ZHIKU_GATEWAY_OIDC_CLIENT_ID is required when ZHIKU_GATEWAY_OIDC_ISSUER is set")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


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
    oidc: OidcSettings = Field(default_factory=OidcSettings)

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
