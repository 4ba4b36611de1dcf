"""A knowledge base's sources (``/v1/knowledge_bases/{kb}/sources``): create, list, delete,
sync on demand and read sync reports. The ingest service keeps and syncs them; these routes
only translate, under the same per-key knowledge-base authorization as the files routes
(``kb_guard``: viewing needs VIEW, everything else EDIT)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from services.gateway.audit import AuditAction
from services.gateway.deps import AuditDep, IngestStub, KnowledgeBaseName, SettingsDep
from services.gateway.schemas.sources import Source, SourceCreate, SourceList, SyncReport
from zhiku.v1 import ingest_pb2

router = APIRouter(tags=["sources"])

SourceName = Annotated[str, Path(min_length=1, max_length=64, description="the source's name")]


@router.post("/v1/knowledge_bases/{kb}/sources", response_model=Source, status_code=status.HTTP_201_CREATED)
async def create_source(
    kb: KnowledgeBaseName,
    body: SourceCreate,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> Source:
    """Add a source (directory under the server's root, S3 bucket and prefix, or web site);
    nothing is synced until the first sync (``POST .../sync`` or its schedule)."""
    created = await ingest.CreateSource(
        ingest_pb2.CreateSourceRequest(knowledge_base=kb, source=body.to_pb()),
        timeout=settings.request_timeout_s,
    )
    # Where it reads from, never its credentials.
    where = {"path": body.path, "bucket": body.bucket, "prefix": body.prefix, "start_url": body.start_url}
    await audit.record(
        AuditAction.SOURCE_CREATE,
        request=request,
        knowledge_base=kb,
        target=body.name,
        detail={"kind": body.kind, "interval_s": body.interval_s, **{k: v for k, v in where.items() if v}},
    )
    return Source.from_pb(created)


@router.get("/v1/knowledge_bases/{kb}/sources", response_model=SourceList)
async def list_sources(kb: KnowledgeBaseName, ingest: IngestStub, settings: SettingsDep) -> SourceList:
    reply = await ingest.ListSources(
        ingest_pb2.ListSourcesRequest(knowledge_base=kb), timeout=settings.request_timeout_s
    )
    return SourceList(data=[Source.from_pb(source) for source in reply.sources])


@router.delete("/v1/knowledge_bases/{kb}/sources/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(
    kb: KnowledgeBaseName,
    name: SourceName,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> None:
    """Forget the source and its reports; the files it synced stay in the knowledge base."""
    await ingest.DeleteSource(
        ingest_pb2.DeleteSourceRequest(knowledge_base=kb, name=name), timeout=settings.request_timeout_s
    )
    await audit.record(AuditAction.SOURCE_DELETE, request=request, knowledge_base=kb, target=name)


@router.post(
    "/v1/knowledge_bases/{kb}/sources/{name}/sync",
    response_model=SyncReport,
    status_code=status.HTTP_202_ACCEPTED,
)
async def sync_source(
    kb: KnowledgeBaseName,
    name: SourceName,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> SyncReport:
    """Queue a sync (or answer the one already pending); follow it with ``GET .../syncs/{id}``."""
    reply = await ingest.SyncSource(
        ingest_pb2.SyncSourceRequest(knowledge_base=kb, name=name), timeout=settings.request_timeout_s
    )
    await audit.record(
        AuditAction.SOURCE_SYNC, request=request, knowledge_base=kb, target=name, detail={"sync_id": reply.id}
    )
    return SyncReport.from_pb(reply)


@router.get("/v1/knowledge_bases/{kb}/sources/{name}/syncs/{sync_id}", response_model=SyncReport)
async def get_sync(
    kb: KnowledgeBaseName,
    name: SourceName,
    ingest: IngestStub,
    settings: SettingsDep,
    sync_id: Annotated[str, Path(min_length=1, max_length=64, description="a sync's id, or 'latest'")],
) -> SyncReport:
    """One sync's report: added, updated, removed and failed files (each with its reason)."""
    request = ingest_pb2.GetSyncReportRequest(
        knowledge_base=kb, name=name, id="" if sync_id == "latest" else sync_id
    )
    return SyncReport.from_pb(await ingest.GetSyncReport(request, timeout=settings.request_timeout_s))
