"""Ingest calls the Chatchat routes share: submit a file and wait until its job settles.

Chatchat parses and embeds inside the request, so its clients take a 200 as "indexed". Zhiku
ingests in the Celery worker; these helpers wait for the jobs, so a Chatchat route answers only
once the outcome is known and ``failed_files`` can report parse or embed failures too.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from services.gateway.config import GatewaySettings
from services.gateway.errors import HttpApiError
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc

TERMINAL_STATES = frozenset(
    {ingest_pb2.JOB_STATE_SUCCEEDED, ingest_pb2.JOB_STATE_FAILED, ingest_pb2.JOB_STATE_CANCELLED}
)
POLL_INTERVAL_S = 0.2
# gRPC codes that concern one file (bad name, empty, too large), not the whole request.
PER_FILE_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}
)


def is_not_found(error: grpc.RpcError) -> bool:
    return error.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def per_file_reason(error: grpc.RpcError) -> str | None:
    """The reason to list under ``failed_files``, or None when the error is not the file's."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    if code in PER_FILE_CODES:
        return error.details() or code.name  # type: ignore[attr-defined]
    return None


async def existing_files(
    ingest: ingest_pb2_grpc.IngestServiceStub, kb: str, settings: GatewaySettings
) -> list[str]:
    reply = await ingest.ListFiles(
        ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=settings.request_timeout_s
    )
    return [info.name for info in reply.files]


async def submit(
    ingest: ingest_pb2_grpc.IngestServiceStub,
    kb: str,
    name: str,
    content: bytes,
    settings: GatewaySettings,
    *,
    chunk_size: int = 0,
    chunk_overlap: int = 0,
) -> ingest_pb2.Job:
    return await ingest.SubmitFile(
        ingest_pb2.SubmitFileRequest(
            knowledge_base=kb,
            file_name=name,
            content=content,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            # Chatchat's upload (with override), update and recreate calls always re-index,
            # even identical content (e.g. with new chunk settings): never the no-op path.
            override=True,
        ),
        timeout=settings.request_timeout_s,
    )


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
