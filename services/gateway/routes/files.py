"""``/v1/knowledge_bases/{kb}/files``: upload (async ingestion), list, delete, download.

Uploads are accepted with 202 and one job per file; ingestion runs in the Celery worker and
clients follow ``GET /v1/jobs/{id}`` (or its ``/events`` stream). Content identical to what is
indexed is a no-op answered with ``"unchanged": true``; ``override=true`` re-indexes anyway,
and ``POST .../files/{name}/reindex`` re-splits the stored original with new settings.
Submission itself is ``services.gateway.submitting``, shared with Chatchat and file chats.

The body size limit is enforced by middleware before
the multipart body is parsed, and multipart parsing spools files to disk past 1 MB, so a
large upload never sits in memory more than one file at a time.
"""

from __future__ import annotations

import mimetypes
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status
from pydantic import ValidationError

from services.gateway.audit import AuditAction
from services.gateway.deps import (
    AuditDep,
    FileName,
    IngestStub,
    KnowledgeBaseName,
    SettingsDep,
    StoreDep,
    mark_upload,
)
from services.gateway.errors import HttpApiError
from services.gateway.file_access import resolve_access
from services.gateway.schemas.native import (
    FileAccess,
    FileEntry,
    FileList,
    ReindexRequest,
    SplitterName,
    SubmittedJob,
    UploadAccepted,
)
from services.gateway.submitting import MAX_CHUNK_SIZE, submit_uploads, upload_names
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/v1/knowledge_bases/{kb}/files", tags=["files"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    dependencies=[Depends(mark_upload)],
)
async def upload_files(
    kb: KnowledgeBaseName,
    files: Annotated[list[UploadFile], File(description="one or more files (repeat the field)")],
    ingest: IngestStub,
    settings: SettingsDep,
    store: StoreDep,
    request: Request,
    audit: AuditDep,
    chunk_size: Annotated[int, Form(ge=0, le=MAX_CHUNK_SIZE, description="0: service default")] = 0,
    chunk_overlap: Annotated[int, Form(ge=0, le=MAX_CHUNK_SIZE, description="0: service default")] = 0,
    override: Annotated[bool, Form(description="re-index even identical content")] = False,
    splitter: Annotated[SplitterName, Form(description="recursive (default) or markdown")] = "recursive",
    title_enhance: Annotated[bool, Form(description="prefix short title lines to their chunks")] = False,
    parent_child: Annotated[
        bool | None,
        Form(description="parent-child chunks for these files; unset: the knowledge base's setting"),
    ] = None,
    parent_chunk_size: Annotated[
        int, Form(ge=0, le=MAX_CHUNK_SIZE, description="parents' size bound; 0: the KB's or 1500")
    ] = 0,
    access: Annotated[
        str | None,
        Form(
            description='who may read these files, JSON {"users": [ids], "groups": [names]}; '
            "unset: new files are open, re-uploads keep their list"
        ),
    ] = None,
) -> UploadAccepted:
    """Queue each file for ingestion; answers before any parsing happens."""
    if chunk_size and chunk_overlap >= chunk_size:
        raise HttpApiError(422, "chunk_overlap must be smaller than chunk_size", param="chunk_overlap")
    access_list = None if access is None else (await resolve_access(store, parse_access(access))).to_pb()
    names = upload_names(files)
    # Fail fast on an unknown knowledge base before shipping megabytes to the ingest service.
    await ingest.GetKnowledgeBase(
        ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=settings.request_timeout_s
    )
    submitted = await submit_uploads(
        ingest,
        kb,
        names,
        files,
        settings,
        override=override,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        splitter=splitter,
        title_enhance=title_enhance,
        parent_child=parent_child,
        parent_chunk_size=parent_chunk_size,
        access=access_list,
    )
    shared = {"access": access_list_json(access_list)} if access_list is not None else {}
    await audit.record_each(
        AuditAction.FILE_UPLOAD,
        [
            (name, {"bytes": size, "job_id": job.id, "override": override, **shared})
            for (job, size), name in zip(submitted, names, strict=True)
        ],
        request=request,
        knowledge_base=kb,
    )
    return UploadAccepted(
        jobs=[SubmittedJob.from_pb(job, name) for (job, _), name in zip(submitted, names, strict=True)]
    )


def access_list_json(access: ingest_pb2.FileAccess) -> dict[str, list[str]]:
    return FileAccess.from_pb(access).model_dump()


def parse_access(raw: str) -> FileAccess:
    """The upload form's ``access`` field; a 422 naming the field when it is not the JSON shape."""
    try:
        return FileAccess.model_validate_json(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise HttpApiError(
            422, f"access: {where + ': ' if where else ''}{problem['msg']}", param="access"
        ) from None


@router.get("/{file_name}/access", response_model=FileAccess)
async def get_file_access(
    kb: KnowledgeBaseName, file_name: FileName, ingest: IngestStub, settings: SettingsDep
) -> FileAccess:
    """Who may read the file (both lists empty: everyone who may view the knowledge base)."""
    info = await ingest.GetFile(
        ingest_pb2.GetFileRequest(knowledge_base=kb, file_name=file_name), timeout=settings.request_timeout_s
    )
    return FileAccess.from_pb(info.access)


@router.put("/{file_name}/access", response_model=FileAccess)
async def set_file_access(
    kb: KnowledgeBaseName,
    file_name: FileName,
    body: FileAccess,
    ingest: IngestStub,
    settings: SettingsDep,
    store: StoreDep,
    request: Request,
    audit: AuditDep,
) -> FileAccess:
    """Replace who may read the file; its indexed chunks follow at once, without re-embedding.
    A restricted list always keeps the file's uploader."""
    info = await ingest.SetFileAccess(
        ingest_pb2.SetFileAccessRequest(
            knowledge_base=kb, file_name=file_name, access=(await resolve_access(store, body)).to_pb()
        ),
        timeout=settings.request_timeout_s,
    )
    access = FileAccess.from_pb(info.access)
    await audit.record(
        AuditAction.FILE_ACCESS_SET,
        request=request,
        knowledge_base=kb,
        target=file_name,
        detail=access.model_dump(),
    )
    return access


@router.post("/{file_name}/reindex", status_code=status.HTTP_202_ACCEPTED, response_model=UploadAccepted)
async def reindex_file(
    kb: KnowledgeBaseName,
    file_name: FileName,
    ingest: IngestStub,
    settings: SettingsDep,
    http_request: Request,
    audit: AuditDep,
    body: ReindexRequest | None = None,
) -> UploadAccepted:
    """Index the stored original again (new split settings); the old chunks stay searchable
    until the new ones are indexed."""
    body = body or ReindexRequest()
    if body.chunk_size and body.chunk_overlap >= body.chunk_size:
        raise HttpApiError(422, "chunk_overlap must be smaller than chunk_size", param="chunk_overlap")
    request = ingest_pb2.ReindexFileRequest(
        knowledge_base=kb,
        file_name=file_name,
        chunk_size=body.chunk_size,
        chunk_overlap=body.chunk_overlap,
        splitter=body.splitter or "",
    )
    if body.title_enhance is not None:
        request.title_enhance = body.title_enhance
    if body.parent_child is not None:
        request.parent_child = body.parent_child
    request.parent_chunk_size = body.parent_chunk_size
    job = await ingest.ReindexFile(request, timeout=settings.request_timeout_s)
    await audit.record(
        AuditAction.FILE_REINDEX,
        request=http_request,
        knowledge_base=kb,
        target=file_name,
        detail={"job_id": job.id},
    )
    return UploadAccepted(jobs=[SubmittedJob.from_pb(job, file_name)])


@router.get("", response_model=FileList)
async def list_files(kb: KnowledgeBaseName, ingest: IngestStub, settings: SettingsDep) -> FileList:
    reply = await ingest.ListFiles(
        ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=settings.request_timeout_s
    )
    return FileList(data=[FileEntry.from_pb(info) for info in reply.files])


@router.delete("/{file_name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_file(
    kb: KnowledgeBaseName,
    file_name: FileName,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> Response:
    """Remove the file, its chunks from the index and its original."""
    await ingest.DeleteFile(
        ingest_pb2.DeleteFileRequest(knowledge_base=kb, file_name=file_name),
        timeout=settings.request_timeout_s,
    )
    await audit.record(AuditAction.FILE_DELETE, request=request, knowledge_base=kb, target=file_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def content_disposition(file_name: str, disposition: str) -> str:
    """RFC 6266 header with an ASCII fallback and the exact name as RFC 5987 ``filename*``."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in file_name)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


@router.get("/{file_name}/content", response_class=Response)
async def download_file(
    kb: KnowledgeBaseName,
    file_name: FileName,
    ingest: IngestStub,
    settings: SettingsDep,
    download: Annotated[bool, Query(description="attachment instead of inline")] = False,
) -> Response:
    """The original bytes, as uploaded; what citation URLs point at."""
    stored = await ingest.GetFileContent(
        ingest_pb2.GetFileContentRequest(knowledge_base=kb, file_name=file_name),
        timeout=settings.request_timeout_s,
    )
    name = stored.file_name or file_name
    media_type = stored.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {
        "Content-Disposition": content_disposition(name, "attachment" if download else "inline"),
        # Uploaded HTML or SVG shown inline must not run script on the API's origin.
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(content=stored.content, media_type=media_type, headers=headers)
