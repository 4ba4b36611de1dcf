"""Submitting files to the ingest service and following their jobs: the one place that calls
``SubmitFile``, for the native upload route, the Chatchat routes and file chats alike.

Zhiku ingests in the Celery worker, so a submission answers with a job at once. The native API
hands that job to the client; Chatchat's clients (which take a 200 as "indexed") and file chats
(whose answer says which files are usable) wait here until each job settles, so a failure to
parse or embed a file is reported with it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from fastapi import UploadFile

from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError
from services.gateway.names import upload_file_name
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc

# Largest chunk_size and chunk_overlap an upload may ask for.
MAX_CHUNK_SIZE = 100_000
TERMINAL_STATES = frozenset(
    {ingest_pb2.JOB_STATE_SUCCEEDED, ingest_pb2.JOB_STATE_FAILED, ingest_pb2.JOB_STATE_CANCELLED}
)
POLL_INTERVAL_S = 0.2
# An upload's files go to the ingest service in SubmitFiles calls of at most this many files
# and bytes (one catalog transaction and one queued message per call); a larger file goes
# alone. Bounds what the gateway holds in memory at once, as one file at a time did.
SUBMIT_BATCH_FILES = 100
SUBMIT_BATCH_BYTES = 16 * 1024 * 1024
# gRPC codes that concern one file (bad name, empty, too large), not the whole request.
PER_FILE_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}
)


def is_not_found(error: grpc.RpcError) -> bool:
    return error.code() is grpc.StatusCode.NOT_FOUND


def per_file_reason(error: grpc.RpcError) -> str | None:
    """The reason to list under ``failed_files``, or None when the error is not the file's."""
    code: grpc.StatusCode = error.code()
    if code in PER_FILE_CODES:
        return error.details() or code.name
    return None


async def existing_files(
    ingest: ingest_pb2_grpc.IngestServiceStub, kb: str, settings: GatewaySettings
) -> list[str]:
    reply = await ingest.ListFiles(
        ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=settings.request_timeout_s
    )
    return [info.name for info in reply.files]


def upload_names(files: list[UploadFile]) -> list[str]:
    """The stored name of each upload, in order; a bad or repeated name is a 422 for the whole
    request (before any file is read)."""
    names: list[str] = []
    for upload in files:
        try:
            name = upload_file_name(upload.filename)
        except ValueError as error:
            raise HttpApiError(422, f"{upload.filename!r}: {error}", param="files") from error
        if name in names:
            raise HttpApiError(422, f"file {name!r} appears twice in one upload", param="files")
        names.append(name)
    return names


async def submit_uploads(
    ingest: ingest_pb2_grpc.IngestServiceStub,
    kb: str,
    names: list[str],
    files: list[UploadFile],
    settings: GatewaySettings,
    **options: Any,
) -> list[tuple[ingest_pb2.Job, int]]:
    """Queue the files of an upload, in SubmitFiles calls of up to SUBMIT_BATCH_FILES files and
    SUBMIT_BATCH_BYTES; ``options`` are :func:`file_request`'s. The jobs in upload order, each
    with its file's size in bytes (what the audit trail records)."""
    jobs: list[ingest_pb2.Job] = []
    sizes: list[int] = []
    batch: list[ingest_pb2.SubmitFileRequest] = []
    size = 0

    async def flush() -> None:
        nonlocal size
        if batch:
            reply = await ingest.SubmitFiles(
                ingest_pb2.SubmitFilesRequest(files=batch), timeout=settings.request_timeout_s
            )
            jobs.extend(reply.jobs)
            batch.clear()
            size = 0

    for name, upload in zip(names, files, strict=True):
        content = await upload.read()
        if batch and (len(batch) >= SUBMIT_BATCH_FILES or size + len(content) > SUBMIT_BATCH_BYTES):
            await flush()
        batch.append(file_request(kb, name, content, **options))
        sizes.append(len(content))
        size += len(content)
    await flush()
    return list(zip(jobs, sizes, strict=True))


def file_request(
    kb: str,
    name: str,
    content: bytes,
    *,
    override: bool,
    chunk_size: int = 0,
    chunk_overlap: int = 0,
    splitter: str = "",
    title_enhance: bool = False,
    parent_child: bool | None = None,
    parent_chunk_size: int = 0,
    access: ingest_pb2.FileAccess | None = None,
) -> ingest_pb2.SubmitFileRequest:
    """The SubmitFileRequest of one file (``override``: re-index even content identical to what
    is indexed, instead of the no-op answered with ``unchanged``)."""
    request = ingest_pb2.SubmitFileRequest(
        knowledge_base=kb,
        file_name=name,
        content=content,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        override=override,
        splitter=splitter,
        title_enhance=title_enhance,
        parent_chunk_size=parent_chunk_size,
    )
    if parent_child is not None:  # unset: the knowledge base's setting
        request.parent_child = parent_child
    if access is not None:  # unset: a new file is open, a re-upload keeps its list
        request.access.CopyFrom(access)
    return request


async def submit_file(
    ingest: ingest_pb2_grpc.IngestServiceStub,
    request: ingest_pb2.SubmitFileRequest,
    settings: GatewaySettings,
) -> ingest_pb2.Job:
    """Queue one file for ingestion (``request`` from :func:`file_request`, which alone knows
    its fields); the job as submitted."""
    job: ingest_pb2.Job = await ingest.SubmitFile(request, timeout=settings.request_timeout_s)
    return job


async def wait_for_job(
    ingest: ingest_pb2_grpc.IngestServiceStub, job: ingest_pb2.Job, settings: GatewaySettings
) -> ingest_pb2.Job:
    """Poll until the job settles; bounded by the gateway's generation deadline (a hung worker
    gives 504 rather than a request that never ends)."""
    deadline = time.monotonic() + settings.chat_timeout_s
    while job.state not in TERMINAL_STATES:
        if time.monotonic() > deadline:
            raise HttpApiError(
                504, f"ingestion of {job.file_name!r} did not finish in time", code="deadline_exceeded"
            )
        await asyncio.sleep(POLL_INTERVAL_S)
        job = await ingest.GetJob(ingest_pb2.GetJobRequest(id=job.id), timeout=settings.request_timeout_s)
    return job


def job_failure(job: ingest_pb2.Job) -> str | None:
    """Why a settled job did not index its file, or None when it succeeded."""
    if job.state == ingest_pb2.JOB_STATE_SUCCEEDED:
        return None
    if job.state == ingest_pb2.JOB_STATE_CANCELLED:
        return job.error or "superseded by a newer upload of the same file"
    return job.error or "ingestion failed"
