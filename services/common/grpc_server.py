"""Bootstrap shared by every gRPC service: health, reflection, interceptors, metrics, shutdown.

A service module only builds its servicer and calls :func:`run_service`; readiness turns
SERVING only after the service's own ``startup`` hook (model load, store open) has finished,
so Kubernetes and ``make run`` never route traffic to a half-started process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.config import ServiceSettings
from services.common.event_loop import run_event_loop
from services.common.heap import freeze_startup_heap
from services.common.interceptors import ServerInterceptor
from services.common.logging import configure_logging
from services.common.metrics import serve_metrics
from services.common.service_names import HEALTH_SERVICE
from services.common.tracing import setup_tracing

log = logging.getLogger("zhiku.server")

Hook = Callable[[], Awaitable[None]]


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    limit = max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
    ]


@dataclass
class ServiceSpec:
    """What a service contributes to the shared bootstrap."""

    name: str  # short name for logs and metrics: "embed", "retrieve", ...
    # Full gRPC service names (from the generated DESCRIPTOR) for health and reflection.
    service_names: Sequence[str]
    register: Callable[[grpc.aio.Server], None]
    startup: Hook | None = None
    shutdown: list[Hook] = field(default_factory=list)


class GrpcService:
    """A running aio server with its health servicer; usable from tests as well as main()."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        common = settings.common
        self.server = grpc.aio.server(
            interceptors=[ServerInterceptor(spec.name, common.grpc_default_timeout_s)],
            options=channel_options(common.grpc_max_message_mb),
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        spec.register(self.server)
        reflection.enable_server_reflection(
            (
                *spec.service_names,
                HEALTH_SERVICE,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.port = self.server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")

    async def _set_status(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *self.spec.service_names):
            await self.health.set(name, status)

    async def start(self) -> None:
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        log.info("%s listening on %s:%d", self.spec.name, self.settings.grpc_host, self.port)
        if self.spec.startup is not None:
            await self.spec.startup()
        freeze_startup_heap()  # models and clients loaded: what is alive now lives forever
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info("%s ready", self.spec.name)

    async def stop(self) -> None:
        """Refuse new work, let calls in flight finish within the grace period, then close."""
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.settings.shutdown_grace_s)
        for hook in self.spec.shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        log.info("%s stopped", self.spec.name)


async def serve_forever(spec: ServiceSpec, settings: ServiceSettings) -> None:
    service = GrpcService(spec, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await service.start()
    await stop.wait()
    log.info("%s shutting down", spec.name)
    await service.stop()


def run_service(build: Callable[[], ServiceSpec], settings: ServiceSettings) -> None:
    """Entry point body of ``python -m services.<name>.server``."""
    common = settings.common
    spec_holder: dict[str, ServiceSpec] = {}

    async def main() -> None:
        spec = build()
        spec_holder["spec"] = spec
        configure_logging(spec.name, common.log_level, common.log_json)
        setup_tracing(spec.name, common)
        serve_metrics(settings.metrics_port)
        await serve_forever(spec, settings)

    run_event_loop(main(), common.event_loop)
