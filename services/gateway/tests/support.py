"""Building blocks for the gateway tests: real gRPC services on free ports, the app, clients.

The services run in-process (the shared ``GrpcService`` bootstrap, exactly what ``main()``
runs), the gateway talks to them over loopback gRPC. Addresses of services a test does not
need point at a port nobody listens on, which is also how "service down" is produced.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI

from services.common.config import CommonSettings, ServiceSettings
from services.common.grpc_server import GrpcService, ServiceSpec
from services.gateway.config import GatewaySettings

_Settings = TypeVar("_Settings", bound=ServiceSettings)

SERVICES = ("embed", "retrieve", "generate", "ingest")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_address() -> str:
    """An address where nothing listens: calls fail fast with UNAVAILABLE."""
    return f"127.0.0.1:{free_port()}"


def loopback(settings: _Settings) -> _Settings:
    """Service settings bound to a free loopback port, stopping without a grace period."""
    return settings.model_copy(update={"grpc_host": "127.0.0.1", "grpc_port": 0, "shutdown_grace_s": 0.0})


@asynccontextmanager
async def running_service(spec: ServiceSpec, settings: ServiceSettings) -> AsyncIterator[GrpcService]:
    service = GrpcService(spec, loopback(settings))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def gateway_settings(addresses: dict[str, str], **overrides: Any) -> GatewaySettings:
    """Gateway settings with the given service addresses; the others point at dead ports."""
    addrs: dict[str, Any] = {f"{name}_addr": addresses.get(name) or dead_address() for name in SERVICES}
    common = CommonSettings(**addrs)
    # Each app gets its own store file, so tests never share conversations or keys.
    overrides.setdefault("catalog_url", f"sqlite:///{tempfile.mkdtemp(prefix='zhiku-gw-')}/gateway.db")
    return GatewaySettings(common=common, **overrides)


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client; runs the app's lifespan (httpx's ASGI transport does not)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn on a free port (for real disconnects and the openai SDK)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_config=None, access_log=False, proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # surfaces the startup error
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task
