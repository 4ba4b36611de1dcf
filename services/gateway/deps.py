"""Dependency aliases, so route signatures read as declarations of what a route needs.

Everything comes from ``app.state`` (set by ``create_app`` and its lifespan), never from
module globals, so two apps with different settings can live in one process (tests do).

Every dependency is ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in its
thread pool, and four thread hops per request cost milliseconds of search latency.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from services.gateway.access import Access, Principal
from services.gateway.audit import AuditTrail
from services.gateway.authz import KnowledgeBaseGuard
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.errors import UPLOAD_STATE_FLAG, HttpApiError
from services.gateway.names import file_name_error, kb_name_error
from services.gateway.schemas.refs import KB_REF
from services.gateway.store import GatewayStore
from zhiku.v1 import embed_pb2_grpc, generate_pb2_grpc, ingest_pb2_grpc, retrieve_pb2_grpc


async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def get_clients(request: Request) -> ServiceClients:
    clients: ServiceClients | None = getattr(request.app.state, "clients", None)
    if clients is None:
        raise HttpApiError(503, "the gateway is not started (lifespan did not run)", code="not_started")
    return clients


async def get_store(request: Request) -> GatewayStore:
    store: GatewayStore | None = getattr(request.app.state, "store", None)
    if store is None:
        raise HttpApiError(503, "the gateway is not started (lifespan did not run)", code="not_started")
    return store


async def get_access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


async def get_audit(request: Request) -> AuditTrail:
    trail: AuditTrail = request.app.state.audit
    return trail


async def get_principal(request: Request) -> Principal | None:
    """The caller (key or session), or None when the gateway is open or a public route was
    called anonymously."""
    return getattr(request.state, "principal", None)


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
ClientsDep = Annotated[ServiceClients, Depends(get_clients)]
StoreDep = Annotated[GatewayStore, Depends(get_store)]
AccessDep = Annotated[Access, Depends(get_access)]
CurrentKey = Annotated[Principal | None, Depends(get_principal)]
AuditDep = Annotated[AuditTrail, Depends(get_audit)]


async def get_guard(request: Request) -> KnowledgeBaseGuard:
    guard: KnowledgeBaseGuard = request.app.state.guard
    return guard


GuardDep = Annotated[KnowledgeBaseGuard, Depends(get_guard)]


async def _ingest(clients: ClientsDep) -> ingest_pb2_grpc.IngestServiceStub:
    return clients.ingest


async def _embed(clients: ClientsDep) -> embed_pb2_grpc.EmbedServiceStub:
    return clients.embed


async def _retrieve(clients: ClientsDep) -> retrieve_pb2_grpc.RetrieveServiceStub:
    return clients.retrieve


async def _generate(clients: ClientsDep) -> generate_pb2_grpc.GenerateServiceStub:
    return clients.generate


IngestStub = Annotated[ingest_pb2_grpc.IngestServiceStub, Depends(_ingest)]
EmbedStub = Annotated[embed_pb2_grpc.EmbedServiceStub, Depends(_embed)]
RetrieveStub = Annotated[retrieve_pb2_grpc.RetrieveServiceStub, Depends(_retrieve)]
GenerateStub = Annotated[generate_pb2_grpc.GenerateServiceStub, Depends(_generate)]


async def _kb_name(
    kb: Annotated[str, Path(description="Knowledge base name", json_schema_extra=KB_REF)],
) -> str:
    """The ``{kb}`` path parameter, rejected with 422 when it could never be a valid name."""
    problem = kb_name_error(kb)
    if problem is not None:
        raise HttpApiError(422, problem, param="kb")
    return kb


KnowledgeBaseName = Annotated[str, Depends(_kb_name)]


async def _file_name(
    file_name: Annotated[str, Path(description="File name within the knowledge base")],
) -> str:
    problem = file_name_error(file_name)
    if problem is not None:
        raise HttpApiError(422, problem, param="file_name")
    return file_name


FileName = Annotated[str, Depends(_file_name)]


async def mark_upload(request: Request) -> None:
    """Route dependency: RESOURCE_EXHAUSTED from a service here means 413, not 429."""
    setattr(request.state, UPLOAD_STATE_FLAG, True)
