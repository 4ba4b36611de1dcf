"""``/v1/knowledge_bases``: create, list, get, delete (the catalog lives in the ingest service)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from services.gateway.audit import AuditAction
from services.gateway.deps import AuditDep, IngestStub, KnowledgeBaseName, SettingsDep
from services.gateway.schemas.native import (
    CreateKnowledgeBase,
    Job,
    KnowledgeBase,
    KnowledgeBaseList,
    MigrateKnowledgeBase,
)
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/v1/knowledge_bases", tags=["knowledge bases"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KnowledgeBase)
async def create_knowledge_base(
    body: CreateKnowledgeBase, ingest: IngestStub, settings: SettingsDep, request: Request, audit: AuditDep
) -> KnowledgeBase:
    """Create an empty knowledge base; 409 when the name is taken, 403 when the caller's key is
    limited to other knowledge bases (whether or not the name exists)."""
    created = await ingest.CreateKnowledgeBase(
        ingest_pb2.CreateKnowledgeBaseRequest(
            name=body.name,
            description=body.description,
            parent_child=body.parent_child,
            parent_chunk_size=body.parent_chunk_size,
        ),
        timeout=settings.request_timeout_s,
    )
    await audit.record(
        AuditAction.KB_CREATE,
        request=request,
        knowledge_base=body.name,
        detail={"parent_child": body.parent_child},
    )
    return KnowledgeBase.from_pb(created)


@router.get("", response_model=KnowledgeBaseList)
async def list_knowledge_bases(ingest: IngestStub, settings: SettingsDep) -> KnowledgeBaseList:
    """Every knowledge base the caller's key may use; file chats' temporary ones are hidden."""
    reply = await ingest.ListKnowledgeBases(
        ingest_pb2.ListKnowledgeBasesRequest(), timeout=settings.request_timeout_s
    )
    return KnowledgeBaseList(data=[KnowledgeBase.from_pb(kb) for kb in reply.knowledge_bases])


@router.get("/{kb}", response_model=KnowledgeBase)
async def get_knowledge_base(
    kb: KnowledgeBaseName, ingest: IngestStub, settings: SettingsDep
) -> KnowledgeBase:
    found = await ingest.GetKnowledgeBase(
        ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=settings.request_timeout_s
    )
    return KnowledgeBase.from_pb(found)


@router.delete("/{kb}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_knowledge_base(
    kb: KnowledgeBaseName, ingest: IngestStub, settings: SettingsDep, request: Request, audit: AuditDep
) -> Response:
    """Delete the knowledge base with its files, vectors and jobs."""
    await ingest.DeleteKnowledgeBase(
        ingest_pb2.DeleteKnowledgeBaseRequest(name=kb), timeout=settings.request_timeout_s
    )
    await audit.record(AuditAction.KB_DELETE, request=request, knowledge_base=kb)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{kb}/migrate", status_code=status.HTTP_202_ACCEPTED, response_model=Job)
async def migrate_knowledge_base(
    kb: KnowledgeBaseName,
    body: MigrateKnowledgeBase,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> Job:
    """Re-embed every file with another embedding model, without downtime: a new collection is
    filled while the current one keeps answering searches (uploads go to both, deletes apply
    to both), then the knowledge base switches collection and model at once and the old
    collection is dropped. Follow the returned job (``/v1/jobs/{id}``, its events); cancelling
    it leaves the knowledge base as it was. 422 for a model the embed service does not serve,
    409 when a migration already runs or the knowledge base already uses that model."""
    job = await ingest.MigrateKnowledgeBase(
        ingest_pb2.MigrateKnowledgeBaseRequest(knowledge_base=kb, embed_model=body.embed_model),
        timeout=settings.request_timeout_s,
    )
    await audit.record(
        AuditAction.KB_MIGRATE,
        request=request,
        knowledge_base=kb,
        detail={"embed_model": job.embed_model, "job_id": job.id},
    )
    return Job.from_pb(job)
