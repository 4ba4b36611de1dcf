"""Long-lived gRPC channels and stubs to the four services, opened once per process.

A model may be served by a generate service of its own (one Deployment per model): each such
address gets its own channel, and :meth:`ServiceClients.generate_for` picks the stub by model.

Channels multiplex every request over one HTTP/2 connection per service and reconnect on
their own; creating one per request would pay a handshake each time and defeat the retry
policy ``aio_channel`` configures. The lifespan opens a :class:`ServiceClients` and closes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import CommonSettings
from services.common.grpc_client import aio_channel
from services.common.service_names import SERVICE_FULL_NAMES
from services.gateway.authz import KnowledgeBaseGuard
from services.gateway.backend_names import naming_interceptors
from services.gateway.kb_cache import KnowledgeBaseCache
from services.gateway.kb_guard import KnowledgeBaseGuardInterceptor
from zhiku.v1 import (
    embed_pb2_grpc,
    generate_pb2_grpc,
    ingest_pb2_grpc,
    retrieve_pb2_grpc,
)

# Channel name of a generate service that serves one model: "generate:<model>".
GENERATE_PREFIX = "generate:"


def service_of(channel_name: str) -> str:
    """The service behind a channel name ("generate:qwen" -> "generate")."""
    return "generate" if channel_name.startswith(GENERATE_PREFIX) else channel_name


@dataclass
class ServiceClients:
    """The stubs routes call, plus the channels behind them (for health checks and close)."""

    channels: dict[str, grpc.aio.Channel]
    embed: embed_pb2_grpc.EmbedServiceStub
    retrieve: retrieve_pb2_grpc.RetrieveServiceStub
    generate: generate_pb2_grpc.GenerateServiceStub
    ingest: ingest_pb2_grpc.IngestServiceStub
    # Models served at an address of their own (generate_model_addrs), by model name.
    generate_by_model: dict[str, generate_pb2_grpc.GenerateServiceStub] = field(default_factory=dict)
    # Decides who may use which knowledge base; the ingest and retrieve channels enforce it.
    guard: KnowledgeBaseGuard = field(default_factory=KnowledgeBaseGuard)
    # Knowledge-base records for searches (off unless connect() is given a TTL).
    kb_cache: KnowledgeBaseCache = field(default_factory=lambda: KnowledgeBaseCache(ttl_s=0))

    @classmethod
    def connect(
        cls,
        common: CommonSettings,
        guard: KnowledgeBaseGuard,
        kb_cache_ttl_s: float = 0.0,
        generate_model_addrs: dict[str, str] | None = None,
    ) -> ServiceClients:
        """Open the channels (lazily connecting: a service down at startup is not fatal). The
        channels that name knowledge bases (ingest, retrieve) check every call with ``guard``;
        each of ``generate_model_addrs`` gets a channel named ``generate:<model>``."""
        addresses = {
            "embed": common.embed_addr,
            "retrieve": common.retrieve_addr,
            "generate": common.generate_addr,
            "ingest": common.ingest_addr,
        }
        by_model = {f"{GENERATE_PREFIX}{model}": addr for model, addr in (generate_model_addrs or {}).items()}
        addresses.update(by_model)
        checked = KnowledgeBaseGuardInterceptor(guard)
        channels = {
            name: aio_channel(
                address,
                [SERVICE_FULL_NAMES[service_of(name)]],
                common.grpc_max_message_mb,
                [*naming_interceptors(name), *([checked] if name in ("ingest", "retrieve") else [])],
            )
            for name, address in addresses.items()
        }
        ingest = ingest_pb2_grpc.IngestServiceStub(channels["ingest"])
        checked.ingest = ingest
        return cls(
            channels=channels,
            embed=embed_pb2_grpc.EmbedServiceStub(channels["embed"]),
            retrieve=retrieve_pb2_grpc.RetrieveServiceStub(channels["retrieve"]),
            generate=generate_pb2_grpc.GenerateServiceStub(channels["generate"]),
            ingest=ingest,
            generate_by_model={
                name.removeprefix(GENERATE_PREFIX): generate_pb2_grpc.GenerateServiceStub(channels[name])
                for name in by_model
            },
            guard=guard,
            kb_cache=KnowledgeBaseCache(ttl_s=kb_cache_ttl_s),
        )

    def generate_for(self, model: str) -> generate_pb2_grpc.GenerateServiceStub:
        """The generate service that serves ``model`` (the main one unless it has its own)."""
        return self.generate_by_model.get(model, self.generate)

    @property
    def generate_services(self) -> list[generate_pb2_grpc.GenerateServiceStub]:
        """Every generate service, the main one (whose first model is the default) first."""
        return [self.generate, *self.generate_by_model.values()]

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))

    async def _check(self, name: str, timeout_s: float) -> str:
        stub = health_pb2_grpc.HealthStub(self.channels[name])
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAMES[service_of(name)]),
                timeout=timeout_s,
            )
        except grpc.RpcError as error:
            return f"unreachable ({error.code().name.lower()})"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status).lower()

    async def health(self, timeout_s: float) -> dict[str, str]:
        """Each service's health status ("serving" when fine), checked concurrently."""
        names = list(self.channels)
        statuses = await asyncio.gather(*(self._check(name, timeout_s) for name in names))
        return dict(zip(names, statuses, strict=True))
