"""``create_app(settings)``: the FastAPI application, its middleware, routes and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from services.gateway.backends import Backends
from services.gateway.config import GatewaySettings
from services.gateway.errors import install_error_handlers
from services.gateway.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from services.gateway.routes import (
    chat,
    chatchat,
    embeddings,
    files,
    health,
    jobs,
    knowledge_bases,
    models,
    search,
)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the app; channels open in the lifespan, so building it does no I/O."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from services.common.tracing import setup_tracing  # off unless ZHIKU_OTEL_ENDPOINT is set

        setup_tracing("gateway", settings.common)
        app.state.backends = Backends.connect(settings.common)
        try:
            yield
        finally:
            await app.state.backends.close()
            app.state.backends = None

    app = FastAPI(
        title="Zhiku",
        summary="Knowledge-base question answering: OpenAI-compatible chat with citations.",
        version="0.1.0",
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware),
            Middleware(ApiKeyMiddleware, api_keys=settings.api_keys),
            Middleware(BodyLimitMiddleware, max_body_bytes=settings.max_upload_bytes),
        ],
    )
    app.state.settings = settings
    app.state.backends = None
    install_error_handlers(app)
    for module in (health, knowledge_bases, files, jobs, search, chat, embeddings, models):
        app.include_router(module.router)
    for router in chatchat.routers:
        app.include_router(router)
    return app
