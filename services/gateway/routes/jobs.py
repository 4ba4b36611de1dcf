"""``/v1/jobs/{id}``: progress of one file's ingestion, polled by clients after an upload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.gateway.deps import IngestStub, SettingsDep
from services.gateway.schemas import Job
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=Job)
async def get_job(
    job_id: Annotated[str, Path(min_length=1, max_length=200)], ingest: IngestStub, settings: SettingsDep
) -> Job:
    job = await ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=settings.request_timeout_s)
    return Job.from_pb(job)
