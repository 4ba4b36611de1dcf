"""``POST /v1/file_chats``: upload files into a temporary knowledge base and chat with it.

The response comes once ingestion has settled, so it says which files can be cited. Chat by
passing ``"file_chat_id"`` to ``/v1/chat/completions``. The knowledge base expires after
``ZHIKU_GATEWAY_FILE_CHAT_TTL_S`` (default 1 h) and is swept automatically.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile, status
from pydantic import BaseModel, Field

from services.gateway.audit import AuditAction, AuditTrail
from services.gateway.deps import AuditDep, ClientsDep, CurrentKey, SettingsDep, StoreDep, mark_upload
from services.gateway.file_chat import lifecycle
from services.gateway.file_chat.records import FileChat
from services.gateway.submitting import upload_names

router = APIRouter(prefix="/v1/file_chats", tags=["file chat"])


class FileChatFile(BaseModel):
    file_name: str
    state: str = Field(examples=["succeeded", "failed"])
    chunks: int
    error: str | None


class FileChatCreated(BaseModel):
    id: str = Field(description="pass as file_chat_id to /v1/chat/completions")
    expires_at: float = Field(description="unix seconds; the files are deleted after it")
    files: list[FileChatFile]


async def read_uploads(files: list[UploadFile]) -> list[tuple[str, bytes]]:
    """(stored name, content) per upload; a bad or repeated name is a 422 for the whole request."""
    return [(name, await upload.read()) for name, upload in zip(upload_names(files), files, strict=True)]


async def audit_uploads(
    audit: AuditTrail,
    request: Request,
    chat: FileChat,
    named: list[tuple[str, bytes]],
    outcomes: list[lifecycle.FileOutcome],
    via: str,
) -> None:
    """One ``file.upload`` entry per file put into a file chat (its temporary knowledge base)."""
    sizes = dict(named)
    await audit.record_each(
        AuditAction.FILE_UPLOAD,
        [
            (
                outcome.file_name,
                {
                    "file_chat": chat.id,
                    "bytes": len(sizes.get(outcome.file_name, b"")),
                    "state": outcome.state,
                    "via": via,
                },
            )
            for outcome in outcomes
        ],
        request=request,
        knowledge_base=chat.knowledge_base,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FileChatCreated,
    dependencies=[Depends(mark_upload)],
)
async def create_file_chat(
    files: Annotated[list[UploadFile], File(description="one or more files (repeat the field)")],
    clients: ClientsDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: CurrentKey,
    request: Request,
    audit: AuditDep,
) -> FileChatCreated:
    """Create a temporary knowledge base from the files; waits until each is ingested. The
    file chat belongs to the caller's key: no other key can use it or see its files."""
    named = await read_uploads(files)
    chat = await lifecycle.open_file_chat(clients, store, settings, principal)
    chat, outcomes = await lifecycle.add_files(clients, store, chat, named, settings)
    await audit_uploads(audit, request, chat, named, outcomes, "file_chat")
    return FileChatCreated(
        id=chat.id,
        expires_at=chat.expires_at,
        files=[FileChatFile(**vars(outcome)) for outcome in outcomes],
    )
