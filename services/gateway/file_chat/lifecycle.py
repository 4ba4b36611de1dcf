"""File chat: files uploaded into a temporary knowledge base that expires and is swept.

A file chat is an ordinary knowledge base named ``tmp_<id>`` (valid by the shared naming
rules, so the ingest service needs nothing special) plus a row in the gateway store holding
its expiry. Creation waits for ingestion, so the answer says which files are usable. A
background task in the gateway's lifespan deletes expired ones; the expiry is in the database,
so one that expired while the gateway was down is swept at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from services.gateway import submitting
from services.gateway.access import Principal, key_of, visible_owner
from services.gateway.authz import GATEWAY, acting_as
from services.gateway.clients import ServiceClients
from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError
from services.gateway.file_chat.records import FileChat
from services.gateway.schemas.native import job_state
from services.gateway.store import GatewayStore
from zhiku.v1 import ingest_pb2

log = logging.getLogger("zhiku.gateway.file_chats")


@dataclass(frozen=True)
class FileOutcome:
    file_name: str
    state: str
    chunks: int
    error: str | None


async def open_file_chat(
    clients: ServiceClients, store: GatewayStore, settings: GatewaySettings, principal: Principal | None
) -> FileChat:
    """Record a new file chat of the caller's key and create its knowledge base (the record
    goes if that fails).

    Until its files are in, it may live as long as ingestion may take (``chat_timeout_s``
    bounds the wait), so the sweeper never deletes a knowledge base still being filled;
    ``add_files`` then sets the real expiry."""
    chat = await store.run(
        store.file_chats.create, settings.file_chat_ttl_s + settings.chat_timeout_s, key_of(principal)
    )
    try:
        await clients.ingest.CreateKnowledgeBase(
            ingest_pb2.CreateKnowledgeBaseRequest(
                name=chat.knowledge_base, description="file chat (temporary)"
            ),
            timeout=settings.request_timeout_s,
        )
    except BaseException:
        await store.run(store.file_chats.forget, chat.id)
        raise
    return chat


async def _ingest_one(
    clients: ServiceClients,
    kb: str,
    name: str,
    content: bytes,
    settings: GatewaySettings,
    chunk_size: int,
    chunk_overlap: int,
) -> FileOutcome:
    try:
        submission = submitting.file_request(
            kb,
            name,
            content,
            override=True,  # as Chatchat's upload_temp_docs: always index, never the no-op path
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
        )
        job = await submitting.submit_file(clients.ingest, submission, settings)
    except grpc.RpcError as error:
        reason = submitting.per_file_reason(error)
        if reason is None:
            raise
        return FileOutcome(file_name=name, state="failed", chunks=0, error=reason)
    job = await submitting.wait_for_job(clients.ingest, job, settings)
    return FileOutcome(
        file_name=name, state=job_state(job.state), chunks=job.chunks, error=submitting.job_failure(job)
    )


async def add_files(
    clients: ServiceClients,
    store: GatewayStore,
    chat: FileChat,
    files: list[tuple[str, bytes]],
    settings: GatewaySettings,
    *,
    chunk_size: int = 0,
    chunk_overlap: int = 0,
) -> tuple[FileChat, list[FileOutcome]]:
    """Ingest the files into the chat's knowledge base and wait until each settles; the time
    to live then starts again, so the whole TTL is left for chatting."""
    outcomes = list(
        await asyncio.gather(
            *(
                _ingest_one(clients, chat.knowledge_base, name, content, settings, chunk_size, chunk_overlap)
                for name, content in files
            )
        )
    )
    renewed = await store.run(store.file_chats.renew, chat.id, settings.file_chat_ttl_s)
    return renewed or chat, outcomes


async def find_file_chat(store: GatewayStore, chat_id: str, principal: Principal | None) -> FileChat:
    """The caller's live file chat, or 404 (unknown, expired and another key's read alike)."""
    chat = await store.run(store.file_chats.get, chat_id, visible_owner(principal))
    if chat is None:
        raise HttpApiError(404, f"file chat {chat_id!r} does not exist or has expired", param="file_chat_id")
    return chat


async def sweep_expired(clients: ServiceClients, store: GatewayStore, settings: GatewaySettings) -> int:
    """Delete every expired temporary knowledge base; returns how many went."""
    swept = 0
    for chat in await store.run(store.file_chats.expired):
        try:
            await clients.ingest.DeleteKnowledgeBase(
                ingest_pb2.DeleteKnowledgeBaseRequest(name=chat.knowledge_base),
                timeout=settings.request_timeout_s,
            )
        except grpc.RpcError as error:
            if not submitting.is_not_found(error):
                log.warning("could not sweep file chat %s: %s", chat.id, error.details())
                continue  # kept, retried at the next sweep
        await store.run(store.file_chats.forget, chat.id)
        swept += 1
    if swept:
        log.info("swept %d expired file chat(s)", swept)
    return swept


async def run_sweeper(clients: ServiceClients, store: GatewayStore, settings: GatewaySettings) -> None:
    """Sweep now (catching up after a restart), then every ``file_chat_sweep_interval_s``;
    the gateway deletes on its own behalf, not any caller's."""
    with acting_as(GATEWAY):
        await _sweep_forever(clients, store, settings)


async def _sweep_forever(clients: ServiceClients, store: GatewayStore, settings: GatewaySettings) -> None:
    while True:
        try:
            await sweep_expired(clients, store, settings)
        except Exception:  # a database hiccup must not end the sweeper
            log.exception("file chat sweep failed")
        await asyncio.sleep(settings.file_chat_sweep_interval_s)
