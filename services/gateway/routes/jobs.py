"""Ingestion jobs: one job's state (``/v1/jobs/{id}``), its progress as server-sent events,
cancel, and a knowledge base's jobs newest first.

Progress lives in the catalog, written by the workers; the event stream polls the ingest
service and sends the job whenever its stage or progress changed, so any gateway replica can
serve it and no request is ever held open by the work itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from services.gateway.deps import IngestStub, KnowledgeBaseName, SettingsDep
from services.gateway.schemas.native import Job, JobList
from services.gateway.schemas.refs import JOB_REF
from zhiku.v1 import ingest_pb2

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=200, json_schema_extra=JOB_REF)]
TERMINAL_STATES = {"succeeded", "failed", "cancelled"}
# How often the event stream asks for the job; a keep-alive comment goes out this often too.
EVENTS_POLL_S = 0.25
KEEPALIVE_S = 15.0


@router.get("/v1/jobs/{job_id}", response_model=Job)
async def get_job(job_id: JobId, ingest: IngestStub, settings: SettingsDep) -> Job:
    """A job of a knowledge base the caller's key may not use reads exactly like an unknown id."""
    job = await ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=settings.request_timeout_s)
    return Job.from_pb(job)


@router.post("/v1/jobs/{job_id}/cancel", response_model=Job)
async def cancel_job(job_id: JobId, ingest: IngestStub, settings: SettingsDep) -> Job:
    """Stop a queued or running job; a finished job is returned as it is. The file keeps the
    chunks of its last finished upload."""
    job = await ingest.CancelJob(ingest_pb2.CancelJobRequest(id=job_id), timeout=settings.request_timeout_s)
    return Job.from_pb(job)


@router.get("/v1/knowledge_bases/{kb}/jobs", response_model=JobList)
async def list_jobs(
    kb: KnowledgeBaseName,
    ingest: IngestStub,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="most recent jobs to return")] = 100,
) -> JobList:
    reply = await ingest.ListJobs(
        ingest_pb2.ListJobsRequest(knowledge_base=kb, limit=limit), timeout=settings.request_timeout_s
    )
    return JobList(data=[Job.from_pb(job) for job in reply.jobs])


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`data: <job JSON>` per change"}},
)
async def job_events(
    job_id: JobId, request: Request, ingest: IngestStub, settings: SettingsDep
) -> StreamingResponse:
    """Server-sent events: the job's JSON whenever its stage or progress changes; the stream
    ends after a terminal state (succeeded, failed, cancelled)."""
    # Errors (unknown or malformed id) surface as a normal 404/422 before the stream starts.
    first = Job.from_pb(
        await ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=settings.request_timeout_s)
    )

    async def events() -> AsyncIterator[str]:
        job, last, quiet = first, None, 0.0
        while True:
            seen = (job.stage, job.progress, job.chunks, job.error)
            if seen != last:
                last, quiet = seen, 0.0
                yield f"data: {job.model_dump_json()}\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            if job.state in TERMINAL_STATES or await request.is_disconnected():
                return
            await asyncio.sleep(EVENTS_POLL_S)
            quiet += EVENTS_POLL_S
            reply = await ingest.GetJob(
                ingest_pb2.GetJobRequest(id=job_id), timeout=settings.request_timeout_s
            )
            job = Job.from_pb(reply)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
