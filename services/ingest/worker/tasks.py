"""Celery tasks of the ingest worker: thin wrappers that hand a job id to the pipeline.

Tasks take ids, never payloads: the message stays tiny and the job's truth stays in the
catalog, which is what makes redelivery (acks_late after a worker crash) and retries safe.
"""

from __future__ import annotations

from celery import Task

from services.common.errors import DependencyUnavailable
from services.ingest.broker import INGEST_FILE_TASK, INGEST_FILES_TASK, SYNC_SOURCE_TASK, enqueue_ingest
from services.ingest.worker.backoff import Backoff
from services.ingest.worker.celery_app import WorkerCelery, app
from services.ingest.worker.pipeline import Retry
from services.ingest.worker.sync import SourceSync


@app.task(name=INGEST_FILE_TASK, bind=True, max_retries=None)
def ingest_file(self: Task[[str], str | None], job_id: str) -> str | None:
    """Ingest the file of job ``job_id``; a job waiting for a dependency comes back later."""
    celery_app: WorkerCelery = self.app  # type: ignore[assignment]  # typed as the Celery base class
    try:
        state = celery_app.pipeline().run(job_id)
    except Retry as retry:
        # The pipeline recorded the wait (QUEUED, the next try's time) and chose the delay.
        raise self.retry(countdown=retry.delay_s, exc=retry) from retry
    except DependencyUnavailable as error:
        # The catalog itself did not answer, so the job could not even be marked: try again
        # later rather than acknowledge a message whose job would stay stuck.
        backoff = Backoff.from_settings(celery_app.settings)
        countdown = backoff.delay(self.request.retries + 1)
        raise self.retry(countdown=countdown, exc=error, max_retries=backoff.retries()) from error
    return state.value if state is not None else None


@app.task(name=INGEST_FILES_TASK, bind=True)
def ingest_files(self: Task[[list[str]], list[str | None]], job_ids: list[str]) -> list[str | None]:
    """Ingest the files of an upload (one message for all its jobs), side by side in the
    worker's job pool. A job that must wait (a dependency down, or the catalog itself) goes
    back to the queue on its own, as a single-job task after its delay, while the rest of
    the batch goes on; the message is acknowledged once every job has run, so a worker
    lost mid-batch has it redelivered, and jobs already finished are skipped."""
    celery_app: WorkerCelery = self.app  # type: ignore[assignment]  # typed as the Celery base class
    pipeline = celery_app.pipeline()
    backoff = Backoff.from_settings(celery_app.settings)

    def one(job_id: str) -> str | None:
        try:
            state = pipeline.run(job_id)
        except Retry as retry:
            enqueue_ingest(celery_app, job_id, countdown=retry.delay_s)
            return "retry"
        except DependencyUnavailable:
            # The catalog did not answer: the single-job task retries it with its backoff.
            enqueue_ingest(celery_app, job_id, countdown=backoff.delay(1))
            return "retry"
        return state.value if state is not None else None

    return list(celery_app.job_pool().map(one, job_ids))


@app.task(name=SYNC_SOURCE_TASK, bind=True)
def sync_source(self: Task[[str], str | None], run_id: str) -> str | None:
    """Sync a source (its run ``run_id``): list it and submit, re-index or remove its files.

    Not retried: a sync that dies half-way (catalog down, worker killed) stays "running" until
    it goes stale (``STALE_RUN_S``) and the next manual or scheduled sync finishes its work,
    since a sync only ever compares the source with the catalog.
    """
    celery_app: WorkerCelery = self.app  # type: ignore[assignment]  # typed as the Celery base class
    sync = SourceSync(celery_app.pipeline(), lambda job_id: enqueue_ingest(celery_app, job_id))
    report = sync.run(run_id)
    return report.state if report is not None else None
