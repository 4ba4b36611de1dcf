"""Chatchat v0.2's ``/knowledge_base/*`` routes over Zhiku's ingest, embed and retrieve services.

Request fields and envelopes follow Chatchat v0.2.10 so its web UI and API clients work after
changing the base URL. Where Zhiku differs, the route docstring says how:

- uploads, updates and rebuilds wait for their ingestion jobs, so answers are final;
- ``zh_title_enhance``, ``not_refresh_vs_cache``, ``vs_type``, ``embed_model`` and custom
  ``docs`` are accepted and ignored (Zhiku has one splitter and one embedding model per
  deployment, and always indexes the file's own text);
- ``to_vector_store=false`` still indexes: Zhiku has no "stored but not indexed" file;
- ``delete_docs`` always removes the original too (``delete_content`` is ignored), so a later
  ``recreate_vector_store`` does not bring deleted files back;
- scores are Zhiku's similarity in [0, 1], higher is better (see ``search_docs``).
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway import submitting
from services.gateway.audit import AuditAction, AuditTrail
from services.gateway.deps import AuditDep, ClientsDep, IngestStub, SettingsDep, mark_upload
from services.gateway.errors import HttpApiError
from services.gateway.names import file_name_error, kb_name_error, upload_file_name
from services.gateway.retrieval import search_passages
from services.gateway.routes.chatchat.envelopes import (
    ERRORS,
    BaseResponse,
    DocumentWithScore,
    FailedFiles,
    FailedFilesResponse,
    ListResponse,
    chatchat_threshold,
    file_not_found,
    forbidden,
    kb_not_found,
    not_found,
    ok,
    sse_frame,
)
from services.gateway.routes.files import content_disposition
from services.gateway.schemas.native import MAX_QUERY_CHARS
from services.gateway.schemas.refs import KB_REF
from services.gateway.submitting import MAX_CHUNK_SIZE
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/knowledge_base", tags=["chatchat"], responses=ERRORS)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Chatchat's VECTOR_SEARCH_TOP_K and SCORE_THRESHOLD defaults (1 = no filtering there).
CHATCHAT_TOP_K = 3
CHATCHAT_SCORE_THRESHOLD = 1.0
# In every audit entry of these routes, so the trail tells them from the native ones.
VIA = {"via": "chatchat"}
# Chatchat's upload (with override), update and recreate calls always re-index, even identical
# content (e.g. with new chunk settings): never the no-op path.
CHATCHAT_OVERRIDE = True

ChunkSize = Annotated[int, Field(ge=0, le=MAX_CHUNK_SIZE, description="0: Zhiku's default")]


class CreateKnowledgeBaseBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    knowledge_base_name: str = Field(examples=["samples"], json_schema_extra=KB_REF)
    vector_store_type: str = Field(default="", description="accepted, ignored (Zhiku uses Qdrant)")
    embed_model: str = Field(default="", description="accepted, ignored (one model per deployment)")
    kb_info: str = Field(default="", max_length=2000, description="stored as the description")


class DocsBody(BaseModel):
    """Body of ``delete_docs`` and ``update_docs``."""

    model_config = ConfigDict(extra="ignore")

    knowledge_base_name: str = Field(examples=["samples"], json_schema_extra=KB_REF)
    file_names: list[str] = Field(examples=[["file_name.md", "test.txt"]])
    chunk_size: ChunkSize = 0
    chunk_overlap: ChunkSize = 0
    zh_title_enhance: bool = False
    override_custom_docs: bool = False
    docs: Any = None
    delete_content: bool = False
    not_refresh_vs_cache: bool = False


class SearchDocsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(default="", max_length=MAX_QUERY_CHARS, examples=["你好"])
    knowledge_base_name: str = Field(examples=["samples"], json_schema_extra=KB_REF)
    top_k: int = Field(default=CHATCHAT_TOP_K, ge=1, le=100)
    score_threshold: float = Field(
        default=CHATCHAT_SCORE_THRESHOLD,
        ge=0,
        le=1,
        description="Chatchat's meaning: a distance bound, 1 = no filtering; keeps score >= 1 - threshold",
    )
    file_name: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class RecreateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    knowledge_base_name: str = Field(examples=["samples"], json_schema_extra=KB_REF)
    allow_empty_kb: bool = True
    vs_type: str = ""
    embed_model: str = ""
    chunk_size: ChunkSize = 0
    chunk_overlap: ChunkSize = 0
    zh_title_enhance: bool = False
    not_refresh_vs_cache: bool = False


def _chunking_error(chunk_size: int, chunk_overlap: int) -> BaseResponse | None:
    if chunk_size and chunk_overlap >= chunk_size:
        return BaseResponse(code=422, msg="chunk_overlap must be smaller than chunk_size")
    return None


async def _known_kb(ingest: IngestStub, name: str, settings: SettingsDep) -> BaseResponse | None:
    """None when ``name`` is a knowledge base; else the envelope Chatchat answers with."""
    problem = kb_name_error(name)
    if problem is not None:
        return forbidden(problem)
    try:
        await ingest.GetKnowledgeBase(
            ingest_pb2.GetKnowledgeBaseRequest(name=name), timeout=settings.request_timeout_s
        )
    except grpc.RpcError as error:
        if submitting.is_not_found(error):
            return not_found(kb_not_found(name))
        raise
    return None


@router.get("/list_knowledge_bases", response_model=ListResponse)
async def list_knowledge_bases(ingest: IngestStub, settings: SettingsDep) -> ListResponse:
    """Names of the knowledge bases the caller's key may use (file chats' ones hidden)."""
    reply = await ingest.ListKnowledgeBases(
        ingest_pb2.ListKnowledgeBasesRequest(), timeout=settings.request_timeout_s
    )
    return ListResponse(data=[kb.name for kb in reply.knowledge_bases])


@router.post("/create_knowledge_base", response_model=BaseResponse)
async def create_knowledge_base(
    body: CreateKnowledgeBaseBody,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> BaseResponse:
    """Blank and duplicate names answer ``code`` 404 with Chatchat's messages (HTTP 200)."""
    name = body.knowledge_base_name
    if not name.strip():
        return not_found("知识库名称不能为空，请重新填写知识库名称")
    problem = kb_name_error(name)
    if problem is not None:
        return forbidden(problem)
    try:
        await ingest.CreateKnowledgeBase(
            ingest_pb2.CreateKnowledgeBaseRequest(name=name, description=body.kb_info),
            timeout=settings.request_timeout_s,
        )
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.ALREADY_EXISTS:
            return not_found(f"已存在同名知识库 {name}")
        raise
    await audit.record(AuditAction.KB_CREATE, request=request, knowledge_base=name, detail=VIA)
    return ok(f"已新增知识库 {name}")


@router.post("/delete_knowledge_base", response_model=BaseResponse)
async def delete_knowledge_base(
    knowledge_base_name: Annotated[
        str,
        Body(description="the name, as a bare JSON string", examples=["samples"], json_schema_extra=KB_REF),
    ],
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> BaseResponse:
    """The body is a bare JSON string (``"samples"``), as Chatchat's clients send it."""
    unknown = await _known_kb(ingest, knowledge_base_name, settings)
    if unknown is not None:
        return unknown
    await ingest.DeleteKnowledgeBase(
        ingest_pb2.DeleteKnowledgeBaseRequest(name=knowledge_base_name), timeout=settings.request_timeout_s
    )
    await audit.record(AuditAction.KB_DELETE, request=request, knowledge_base=knowledge_base_name, detail=VIA)
    return ok(f"成功删除知识库 {knowledge_base_name}")


@router.get("/list_files", response_model=ListResponse)
async def list_files(
    knowledge_base_name: Annotated[str, Query(examples=["samples"], json_schema_extra=KB_REF)],
    ingest: IngestStub,
    settings: SettingsDep,
) -> ListResponse | BaseResponse:
    unknown = await _known_kb(ingest, knowledge_base_name, settings)
    if unknown is not None:
        return ListResponse(code=unknown.code, msg=unknown.msg, data=[])
    return ListResponse(data=await submitting.existing_files(ingest, knowledge_base_name, settings))


@router.post("/upload_docs", response_model=FailedFilesResponse, dependencies=[Depends(mark_upload)])
async def upload_docs(
    files: Annotated[list[UploadFile], File(description="one or more files (repeat the field)")],
    knowledge_base_name: Annotated[str, Form(examples=["samples"], json_schema_extra=KB_REF)],
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
    override: Annotated[bool, Form(description="replace files that already exist")] = False,
    to_vector_store: Annotated[bool, Form(description="accepted; Zhiku always indexes")] = True,
    chunk_size: Annotated[int, Form(ge=0, le=MAX_CHUNK_SIZE, description="0: Zhiku's default")] = 0,
    chunk_overlap: Annotated[int, Form(ge=0, le=MAX_CHUNK_SIZE, description="0: Zhiku's default")] = 0,
    zh_title_enhance: Annotated[bool, Form(description="accepted, no effect yet")] = False,
    docs: Annotated[str, Form(description="custom docs JSON: accepted, ignored")] = "",
    not_refresh_vs_cache: Annotated[bool, Form(description="accepted, no effect (no FAISS cache)")] = False,
) -> BaseResponse:
    """Store and index the files, waiting for their jobs; ``data.failed_files`` maps each file
    that did not make it (already there without ``override``, bad name, parse failure) to why.

    Unlike Chatchat, which only refuses a same-named file of the same size, any existing file
    is refused without ``override``."""
    unknown = await _known_kb(ingest, knowledge_base_name, settings)
    if unknown is not None:
        return unknown
    refused = _chunking_error(chunk_size, chunk_overlap)
    if refused is not None:
        return refused
    present = set(await submitting.existing_files(ingest, knowledge_base_name, settings))
    failed: dict[str, str] = {}
    jobs: dict[str, ingest_pb2.Job] = {}
    for upload in files:
        try:
            name = upload_file_name(upload.filename)
        except ValueError as error:
            failed[upload.filename or "?"] = str(error)
            continue
        if name in jobs or (name in present and not override):
            failed[name] = f"文件 {name} 已存在。"
            continue
        content = await upload.read()
        try:
            submission = submitting.file_request(
                knowledge_base_name,
                name,
                content,
                override=CHATCHAT_OVERRIDE,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
            )
            jobs[name] = await submitting.submit_file(ingest, submission, settings)
        except grpc.RpcError as error:
            reason = submitting.per_file_reason(error)
            if reason is None:
                raise
            failed[name] = f"{name} 文件上传失败，报错信息为: {reason}"
            continue
        await audit.record(
            AuditAction.FILE_UPLOAD,
            request=request,
            knowledge_base=knowledge_base_name,
            target=name,
            detail={"bytes": len(content), "job_id": jobs[name].id, "override": override, **VIA},
        )
    failed.update(await _settle(ingest, jobs, settings))
    return FailedFilesResponse(msg="文件上传与向量化完成", data=FailedFiles(failed_files=failed))


async def _settle(
    ingest: IngestStub, jobs: dict[str, ingest_pb2.Job], settings: SettingsDep
) -> dict[str, str]:
    """Wait for every job; the failures by file name."""
    settled = await asyncio.gather(*(submitting.wait_for_job(ingest, job, settings) for job in jobs.values()))
    failures = {name: submitting.job_failure(job) for name, job in zip(jobs, settled, strict=True)}
    return {name: reason for name, reason in failures.items() if reason is not None}


@router.post("/delete_docs", response_model=FailedFilesResponse)
async def delete_docs(
    body: DocsBody, ingest: IngestStub, settings: SettingsDep, request: Request, audit: AuditDep
) -> BaseResponse:
    """Remove files with their chunks and originals (``delete_content`` is always true here)."""
    unknown = await _known_kb(ingest, body.knowledge_base_name, settings)
    if unknown is not None:
        return unknown
    failed: dict[str, str] = {}
    for name in body.file_names:
        if file_name_error(name) is not None:
            failed[name] = file_not_found(name)
            continue
        try:
            await ingest.DeleteFile(
                ingest_pb2.DeleteFileRequest(knowledge_base=body.knowledge_base_name, file_name=name),
                timeout=settings.request_timeout_s,
            )
        except grpc.RpcError as error:
            if not submitting.is_not_found(error):
                raise
            failed[name] = file_not_found(name)
            continue
        await audit.record(
            AuditAction.FILE_DELETE,
            request=request,
            knowledge_base=body.knowledge_base_name,
            target=name,
            detail=VIA,
        )
    return FailedFilesResponse(msg="文件删除完成", data=FailedFiles(failed_files=failed))


@router.post("/update_docs", response_model=FailedFilesResponse)
async def update_docs(
    body: DocsBody, ingest: IngestStub, settings: SettingsDep, request: Request, audit: AuditDep
) -> BaseResponse:
    """Re-index files from their stored originals (optionally with new chunking), waiting."""
    unknown = await _known_kb(ingest, body.knowledge_base_name, settings)
    if unknown is not None:
        return unknown
    refused = _chunking_error(body.chunk_size, body.chunk_overlap)
    if refused is not None:
        return refused
    failed: dict[str, str] = {}
    jobs: dict[str, ingest_pb2.Job] = {}
    for name in dict.fromkeys(body.file_names):
        job = await _resubmit(
            ingest, body.knowledge_base_name, name, settings, body.chunk_size, body.chunk_overlap
        )
        if isinstance(job, str):
            failed[name] = job
        else:
            jobs[name] = job
            await _audit_reindex(audit, request, body.knowledge_base_name, name, job)
    failed.update(await _settle(ingest, jobs, settings))
    return FailedFilesResponse(msg="更新文档完成", data=FailedFiles(failed_files=failed))


async def _audit_reindex(
    audit: AuditTrail, request: Request, kb: str, name: str, job: ingest_pb2.Job
) -> None:
    await audit.record(
        AuditAction.FILE_REINDEX,
        request=request,
        knowledge_base=kb,
        target=name,
        detail={"job_id": job.id, **VIA},
    )


async def _resubmit(
    ingest: IngestStub, kb: str, name: str, settings: SettingsDep, chunk_size: int = 0, chunk_overlap: int = 0
) -> ingest_pb2.Job | str:
    """Submit a stored file's original bytes again; a reason string when that is impossible."""
    if file_name_error(name) is not None:
        return file_not_found(name)
    try:
        stored = await ingest.GetFileContent(
            ingest_pb2.GetFileContentRequest(knowledge_base=kb, file_name=name),
            timeout=settings.request_timeout_s,
        )
        submission = submitting.file_request(
            kb,
            name,
            stored.content,
            override=CHATCHAT_OVERRIDE,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
        )
        return await submitting.submit_file(ingest, submission, settings)
    except grpc.RpcError as error:
        if submitting.is_not_found(error):
            return file_not_found(name)
        reason = submitting.per_file_reason(error)
        if reason is None:
            raise
        return reason


@router.post("/search_docs", response_model=list[DocumentWithScore])
async def search_docs(
    body: SearchDocsBody, clients: ClientsDep, settings: SettingsDep
) -> list[DocumentWithScore]:
    """A bare list of ``{page_content, metadata, score}``, best first, at most ``top_k``.

    ``score`` keeps Zhiku's meaning everywhere: a similarity in [0, 1], higher is better
    (Chatchat returned a distance, lower is better). ``score_threshold`` is read with Chatchat's
    meaning so its clients' default (1 = no filtering) still works: hits are kept when
    ``score >= 1 - score_threshold``. An unknown knowledge base or an empty query gives ``[]``,
    as in Chatchat (its listing of documents by ``file_name``/``metadata`` without a query is
    not supported)."""
    if not body.query.strip() or kb_name_error(body.knowledge_base_name) is not None:
        return []
    try:
        kb = await clients.ingest.GetKnowledgeBase(
            ingest_pb2.GetKnowledgeBaseRequest(name=body.knowledge_base_name),
            timeout=settings.request_timeout_s,
        )
    except grpc.RpcError as error:
        if submitting.is_not_found(error):
            return []
        raise
    passages = await search_passages(
        clients,
        kb,
        body.query,
        top_k=body.top_k,
        score_threshold=chatchat_threshold(body.score_threshold),
        timeout_s=settings.request_timeout_s,
    )
    return [
        DocumentWithScore(
            page_content=passage.text,
            metadata={**dict(passage.metadata), "source": passage.file_name},
            id=passage.chunk_id,
            score=round(passage.score, 6),
        )
        for passage in passages
    ]


@router.get(
    "/download_doc",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the original file"}},
)
async def download_doc(
    knowledge_base_name: Annotated[str, Query(examples=["samples"], json_schema_extra=KB_REF)],
    file_name: Annotated[str, Query(examples=["test.txt"])],
    ingest: IngestStub,
    settings: SettingsDep,
    preview: Annotated[bool, Query(description="inline instead of attachment")] = False,
) -> Response:
    """The original bytes; a missing file is a JSON envelope with ``code`` 404 (HTTP 200)."""
    problem = kb_name_error(knowledge_base_name) or file_name_error(file_name)
    if problem is not None:
        return _envelope(forbidden(problem))
    try:
        stored = await ingest.GetFileContent(
            ingest_pb2.GetFileContentRequest(knowledge_base=knowledge_base_name, file_name=file_name),
            timeout=settings.request_timeout_s,
        )
    except grpc.RpcError as error:
        if submitting.is_not_found(error):
            return _envelope(not_found(file_not_found(file_name)))
        raise
    name = stored.file_name or file_name
    headers = {
        "Content-Disposition": content_disposition(name, "inline" if preview else "attachment"),
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    media_type = stored.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(content=stored.content, media_type=media_type, headers=headers)


def _envelope(body: BaseResponse) -> Response:
    return Response(content=body.model_dump_json(), media_type="application/json")


@router.post(
    "/recreate_vector_store",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress frames"}},
)
async def recreate_vector_store(
    body: RecreateBody, ingest: IngestStub, settings: SettingsDep, request: Request, audit: AuditDep
) -> StreamingResponse:
    """Re-index every stored file from its original, as SSE frames
    ``{"code": 200, "msg": "(i / n): name", "total": n, "finished": i, "doc": name}`` in file
    order (``code`` 500 frames for files that failed). With ``allow_empty_kb`` (default) a
    missing knowledge base is created empty, as Chatchat does; otherwise one 404 frame."""
    return StreamingResponse(
        _recreate_frames(body, ingest, settings, request, audit),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _recreate_frames(
    body: RecreateBody, ingest: IngestStub, settings: SettingsDep, request: Request, audit: AuditTrail
) -> AsyncIterator[bytes]:
    kb = body.knowledge_base_name
    try:
        problem = kb_name_error(kb) or (
            "chunk_overlap must be smaller than chunk_size"
            if body.chunk_size and body.chunk_overlap >= body.chunk_size
            else None
        )
        if problem is not None:
            yield sse_frame({"code": 403, "msg": problem})
            return
        unknown = await _known_kb(ingest, kb, settings)
        if unknown is not None:
            if not body.allow_empty_kb:
                yield sse_frame({"code": 404, "msg": f"未找到知识库 ‘{kb}’"})
                return
            await ingest.CreateKnowledgeBase(
                ingest_pb2.CreateKnowledgeBaseRequest(name=kb), timeout=settings.request_timeout_s
            )
            await audit.record(AuditAction.KB_CREATE, request=request, knowledge_base=kb, detail=VIA)
        names = await submitting.existing_files(ingest, kb, settings)
        submitted = [
            (name, await _resubmit(ingest, kb, name, settings, body.chunk_size, body.chunk_overlap))
            for name in names
        ]
        for name, job in submitted:
            if not isinstance(job, str):
                await _audit_reindex(audit, request, kb, name, job)
        for index, (name, job) in enumerate(submitted):
            reason = (
                job
                if isinstance(job, str)
                else submitting.job_failure(await submitting.wait_for_job(ingest, job, settings))
            )
            if reason is not None:
                yield sse_frame(
                    {"code": 500, "msg": f"添加文件‘{name}’到知识库‘{kb}’时出错：{reason}。已跳过。"}
                )
                continue
            total = len(submitted)
            yield sse_frame(
                {
                    "code": 200,
                    "msg": f"({index + 1} / {total}): {name}",
                    "total": total,
                    "finished": index + 1,
                    "doc": name,
                }
            )
    except HttpApiError as error:
        yield sse_frame({"code": error.status, "msg": error.message})
    except grpc.RpcError as error:
        # Headers are sent already: report in-band, in the frame shape clients parse.
        yield sse_frame({"code": 500, "msg": error.details() or error.code().name})
