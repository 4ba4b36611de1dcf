"""The IngestService gRPC server: ``python -m services.ingest.api.server``.

Wires the servicer to the catalog, the blob store, the task queue and the embed and retrieve
services, and runs the API process's background loops: the job gauges (jobs by state,
queue depth, from the catalog), the sweeper of lost jobs (``services.ingest.jobs``) and the
queueing of scheduled source syncs (``services.ingest.api.sources``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.common.grpc_server import ServiceSpec, run_service
from services.common.service_names import INGEST_SERVICE
from services.ingest.api.downstream import DownstreamStubs
from services.ingest.api.servicer import IngestServicer
from services.ingest.api.sources import queue_due_syncs
from services.ingest.broker import create_celery_app, prepare_broker
from services.ingest.config import IngestSettings
from services.ingest.jobs import sweep_lost_jobs
from services.ingest.metrics import JOBS_BY_STATE, QUEUE_DEPTH
from services.ingest.store.blobs import BlobStore
from services.ingest.store.catalog import Catalog
from services.ingest.store.records import JobState
from zhiku.v1 import ingest_pb2_grpc

log = logging.getLogger("zhiku.ingest")


async def _refresh_job_gauges(catalog: Catalog, every_s: float) -> None:
    """Publish jobs by state and queue depth from the catalog, the source of truth."""
    while True:
        try:
            counts = await asyncio.to_thread(catalog.jobs.counts)
        except Exception as error:  # a metrics refresh must never take the server down
            log.warning("could not refresh job metrics: %s", error)
        else:
            for state, count in counts.items():
                JOBS_BY_STATE.labels(state.value).set(count)
            QUEUE_DEPTH.set(counts[JobState.QUEUED])
        await asyncio.sleep(every_s)


async def _drop_retired(servicer: IngestServicer, interval_s: float) -> None:
    """Every ``interval_s``: drop the collections migrations retired, once due."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await servicer.drop_retired_collections()
        except Exception as error:  # outlive a database or retrieve hiccup; retried next time
            log.warning("dropping retired collections failed: %s", error)


def build_spec(settings: IngestSettings) -> ServiceSpec:
    catalog = Catalog(settings.catalog_url, settings.sqlite_busy_timeout_s)
    blobs = BlobStore(settings.blob_dir)  # type: ignore[arg-type]  # set by the validator
    celery = create_celery_app(settings)
    downstream = DownstreamStubs(settings.common)
    servicer = IngestServicer(settings, catalog, blobs, celery, downstream)
    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        await asyncio.to_thread(catalog.create_schema)
        if not settings.redis_url:
            await asyncio.to_thread(prepare_broker, celery)
        await asyncio.to_thread(blobs.root.mkdir, parents=True, exist_ok=True)
        downstream.open()  # aio channels belong to the server's event loop
        if settings.metrics_refresh_s:
            tasks.append(asyncio.create_task(_refresh_job_gauges(catalog, settings.metrics_refresh_s)))
        if settings.sweep_interval_s:
            sweeper = sweep_lost_jobs(servicer.lifecycle, celery, settings, servicer.drop_generation)
            tasks.append(asyncio.create_task(sweeper))
            tasks.append(asyncio.create_task(_drop_retired(servicer, settings.sweep_interval_s)))
        if settings.sources_sweep_s:
            tasks.append(asyncio.create_task(queue_due_syncs(catalog, celery, settings.sources_sweep_s)))

    async def close() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await downstream.close()
        await asyncio.to_thread(celery.close)
        await asyncio.to_thread(catalog.dispose)

    return ServiceSpec(
        name="ingest",
        service_names=[INGEST_SERVICE],
        register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server),
        startup=startup,
        shutdown=[close],
    )


def main() -> None:
    settings = IngestSettings()
    run_service(lambda: build_spec(settings), settings)


if __name__ == "__main__":
    main()
