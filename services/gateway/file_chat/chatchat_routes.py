"""Chatchat v0.2's ``/knowledge_base/upload_temp_docs`` and ``/chat/file_chat`` over Zhiku's
file chats (temporary knowledge bases with a time to live, see ``services.gateway.file_chat.lifecycle``).

Chatchat keeps temporary FAISS indexes in memory; Zhiku ingests into a ``tmp_<id>`` knowledge
base that expires after ``ZHIKU_GATEWAY_FILE_CHAT_TTL_S``. ``upload_temp_docs`` waits for
ingestion (as Chatchat does) and answers ``data: {"id", "failed_files"}``; with ``prev_id`` of
a live file chat the files are added to it. ``file_chat`` answers frames ``{"answer": token}``
then ``{"docs": [...]}``, or a ``code`` 404 envelope for an unknown or expired id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from services.gateway.access import visible_owner
from services.gateway.chat.generation import start_generation
from services.gateway.chat.planning import plan_chat
from services.gateway.deps import AuditDep, ClientsDep, CurrentKey, SettingsDep, StoreDep, mark_upload
from services.gateway.file_chat import lifecycle
from services.gateway.file_chat.routes import audit_uploads
from services.gateway.names import upload_file_name
from services.gateway.routes.chatchat import chat as chatchat_chat
from services.gateway.routes.chatchat.envelopes import ERRORS, BaseResponse, chatchat_threshold, not_found, ok
from services.gateway.routes.chatchat.knowledge_base import (
    CHATCHAT_SCORE_THRESHOLD,
    CHATCHAT_TOP_K,
    SSE_HEADERS,
)
from services.gateway.schemas.refs import FILE_CHAT_REF
from services.gateway.submitting import MAX_CHUNK_SIZE
from zhiku.v1 import common_pb2

upload_router = APIRouter(prefix="/knowledge_base", tags=["chatchat"], responses=ERRORS)
chat_router = APIRouter(prefix="/chat", tags=["chatchat"], responses=ERRORS)


class FileChatBody(chatchat_chat.ChatBody):
    knowledge_id: str = Field(
        max_length=64, description="the id from upload_temp_docs", json_schema_extra=FILE_CHAT_REF
    )
    top_k: int = Field(default=CHATCHAT_TOP_K, ge=1, le=100)
    score_threshold: float = Field(
        default=CHATCHAT_SCORE_THRESHOLD, ge=0, le=1, description="Chatchat's meaning: 1 = no filtering"
    )


@upload_router.post("/upload_temp_docs", response_model=BaseResponse, dependencies=[Depends(mark_upload)])
async def upload_temp_docs(
    files: Annotated[list[UploadFile], File(description="one or more files (repeat the field)")],
    clients: ClientsDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: CurrentKey,
    request: Request,
    audit: AuditDep,
    prev_id: Annotated[
        str | None, Form(max_length=64, description="add to this file chat", json_schema_extra=FILE_CHAT_REF)
    ] = None,
    chunk_size: Annotated[int, Form(ge=0, le=MAX_CHUNK_SIZE, description="0: Zhiku's default")] = 0,
    chunk_overlap: Annotated[int, Form(ge=0, le=MAX_CHUNK_SIZE, description="0: Zhiku's default")] = 0,
    zh_title_enhance: Annotated[bool, Form(description="accepted, no effect")] = False,
) -> BaseResponse:
    """Files into a temporary knowledge base; ``data.id`` is the ``knowledge_id`` of file_chat."""
    if chunk_size and chunk_overlap >= chunk_size:
        return BaseResponse(code=500, msg="chunk_overlap must be smaller than chunk_size")
    failed: dict[str, str] = {}
    named: list[tuple[str, bytes]] = []
    for upload in files:
        try:
            name = upload_file_name(upload.filename)
        except ValueError as error:
            failed[upload.filename or "?"] = str(error)
            continue
        if any(name == seen for seen, _ in named):
            failed[name] = f"文件 {name} 已存在。"
            continue
        named.append((name, await upload.read()))
    owner = visible_owner(principal)
    chat = await store.run(store.file_chats.get, prev_id, owner) if prev_id else None
    if chat is None:  # another key's prev_id gets a new file chat, exactly like an unknown one
        chat = await lifecycle.open_file_chat(clients, store, settings, principal)
    chat, outcomes = await lifecycle.add_files(
        clients, store, chat, named, settings, chunk_size=chunk_size, chunk_overlap=chunk_overlap
    )
    await audit_uploads(audit, request, chat, named, outcomes, "chatchat")
    failed.update({outcome.file_name: outcome.error for outcome in outcomes if outcome.error})
    return ok(data={"id": chat.id, "failed_files": failed})


def _source(index: int, passage: common_pb2.Passage) -> str:
    """Chatchat's file-chat citation: numbered file name (no link: the files are temporary)."""
    return f"出处 [{index + 1}] [{passage.file_name}] \n\n{passage.text}\n\n"


@chat_router.post("/file_chat", response_model=None, responses=chatchat_chat.EVENT_STREAM)
async def file_chat(
    body: FileChatBody, clients: ClientsDep, store: StoreDep, settings: SettingsDep, principal: CurrentKey
) -> StreamingResponse | JSONResponse:
    """Chat with the files of ``upload_temp_docs``: frames ``{"answer": token}`` then
    ``{"docs": [...]}`` (one ``{"answer", "docs"}`` frame without ``stream``). Another key's
    ``knowledge_id`` is answered like an unknown one."""
    chat = await store.run(store.file_chats.get, body.knowledge_id, visible_owner(principal))
    if chat is None:
        envelope = not_found(f"未找到临时知识库 {body.knowledge_id}，请先上传文件")
        return JSONResponse(envelope.model_dump())
    body = await chatchat_chat.with_served_model(body, clients, settings)
    completion = chatchat_chat.completion_request(
        body, chat.knowledge_base, top_k=body.top_k, score_threshold=chatchat_threshold(body.score_threshold)
    )
    plan = await plan_chat(completion, clients, settings)
    generation = await start_generation(clients, plan, settings.chat_timeout_s)
    docs = [_source(index, passage) for index, passage in enumerate(plan.passages)] or [chatchat_chat.NO_DOCS]
    tail: dict[str, Any] = {"docs": docs}
    return StreamingResponse(
        chatchat_chat.frames(generation, body.stream, "answer", tail),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
