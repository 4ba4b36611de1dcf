"""``create_app(settings)``: the FastAPI application, its middleware, routes and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services.common.heap import freeze_startup_heap
from services.gateway.access import Access
from services.gateway.agent.tools import build_registry
from services.gateway.audit import AuditTrail
from services.gateway.authz import KnowledgeBaseGuard
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.errors import install_error_handlers
from services.gateway.file_chat import routes as file_chats
from services.gateway.file_chat.lifecycle import run_sweeper
from services.gateway.first_admin import ensure_first_admin
from services.gateway.mcp_server.endpoint import mount_mcp, running_mcp
from services.gateway.middleware import (
    AccessMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from services.gateway.oidc.setup import oidc_flow, oidc_middleware
from services.gateway.openapi import ERROR_RESPONSES, install_openapi
from services.gateway.permissions import unlisted_routes
from services.gateway.routes import (
    agent,
    agent_databases,
    audit,
    auth,
    chat,
    chatchat,
    conversations,
    embeddings,
    files,
    health,
    jobs,
    keys,
    knowledge_bases,
    members,
    models,
    oidc,
    search,
    sources,
    users,
)
from services.gateway.store import GatewayStore
from services.gateway.webui import mount_webui

log = logging.getLogger("zhiku.gateway")

API_DESCRIPTION = """\
OpenAI-compatible chat (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`) grounded in
knowledge bases with citations; native knowledge bases, files, jobs and search; conversations
with feedback; file chats (temporary knowledge bases); API keys; Chatchat v0.2 routes; an MCP
server at `/mcp` (streamable HTTP) whose tools search and ask the knowledge bases.

Errors use OpenAI's shape `{"error": {"message", "type", "code", "param"}}` (Chatchat routes
answer `{code, msg, data}` as Chatchat does). Send `Authorization: Bearer <key>` once keys exist.
"""


async def _start_store(
    app: FastAPI, settings: GatewaySettings, access: Access, guard: KnowledgeBaseGuard, trail: AuditTrail
) -> GatewayStore:
    """Open the store (creating the ``gw_`` tables) and say in the log whether keys guard the API."""
    store = GatewayStore(settings.catalog_url)
    await store.run(store.create_schema)
    app.state.store = access.store = guard.store = trail.store = store
    await ensure_first_admin(store, settings)
    if await access.is_open():
        log.warning(
            "no API keys and no users: the gateway is open to anyone who can reach it (set "
            "ZHIKU_GATEWAY_ADMIN_EMAIL and ZHIKU_GATEWAY_ADMIN_PASSWORD, ZHIKU_GATEWAY_API_KEYS, "
            "or create a key with POST /v1/keys)"
        )
    else:
        log.info("sign-in or API key required (Authorization: Bearer <key>)")
    return store


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the app; channels open in the lifespan, so building it does no I/O."""
    settings = settings or GatewaySettings()
    access = Access(settings)
    guard = KnowledgeBaseGuard()
    trail = AuditTrail(settings.audit_retention_days)
    agent_tools = build_registry(settings)  # a misconfigured tool fails here, at start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from services.common.tracing import setup_tracing  # off unless ZHIKU_OTEL_ENDPOINT is set

        setup_tracing("gateway", settings.common)
        app.state.clients = ServiceClients.connect(
            settings.common, guard, settings.kb_cache_ttl_s, settings.generate_model_addrs
        )
        store = await _start_store(app, settings, access, guard, trail)
        agent_tools.sql_databases.store = store
        sweeper = asyncio.create_task(
            run_sweeper(app.state.clients, store, settings), name="file-chat-sweeper"
        )
        freeze_startup_heap()
        try:
            async with running_mcp(app):
                yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await app.state.clients.close()
            app.state.clients = None
            await asyncio.to_thread(store.dispose)
            app.state.store = access.store = guard.store = agent_tools.sql_databases.store = None
            trail.store = None
            await access.limiter.close()
            await access.daily.close()
            await asyncio.to_thread(agent_tools.close)

    app = FastAPI(
        title="Zhiku",
        summary="Knowledge-base question answering: OpenAI-compatible chat with citations.",
        version="0.1.0",
        description=API_DESCRIPTION,
        responses=ERROR_RESPONSES,
        lifespan=lifespan,
        middleware=[
            # First: everything inside (logs, the audit trail) sees the forwarded client address.
            Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies),
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware),
            *_cors(settings),
            Middleware(AccessMiddleware, access=access, guard=guard, audit=trail),
            *oidc_middleware(settings),
            Middleware(
                BodyLimitMiddleware,
                max_body_bytes=settings.max_upload_bytes,
                read_timeout_s=settings.body_read_timeout_s,
            ),
        ],
    )
    app.state.settings = settings
    app.state.clients = None
    app.state.store = None
    app.state.access = access
    app.state.guard = guard
    app.state.audit = trail
    app.state.agent_tools = agent_tools
    app.state.sso = oidc_flow(settings)  # read by /v1/auth/config (its label)
    install_error_handlers(app)
    install_openapi(app)
    for module in (health, knowledge_bases, files, jobs, search, chat, embeddings, models, oidc):
        app.include_router(module.router)
    for module in (conversations, file_chats, keys, agent, agent_databases, sources, audit, auth, members):
        app.include_router(module.router)
    for router in users.routers:
        app.include_router(router)
    app.include_router(conversations.feedback_router)
    for router in chatchat.routers:
        app.include_router(router)
    mount_mcp(app)  # /mcp: knowledge bases as MCP tools, under the same keys
    mount_webui(app)  # last: API routes win over the UI's paths
    unlisted = unlisted_routes(app)
    if unlisted:  # a route nobody decided a rule for must not ship open (or closed by accident)
        raise RuntimeError(f"routes missing from services/gateway/permissions.py: {', '.join(unlisted)}")
    return app


def _cors(settings: GatewaySettings) -> list[Middleware]:
    """CORS for browsers on other origins (``ZHIKU_GATEWAY_CORS_ORIGINS``); none when unset.

    Outside the access middleware, so preflight requests (which carry no key) are answered.
    """
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    ]
