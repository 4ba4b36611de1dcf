"""Celery tasks of the ingest worker: thin wrappers that hand a job id to the pipeline.

Tasks take ids, never payloads: the message stays tiny and the job's truth stays in the
catalog, which is what makes redelivery (acks_late after a worker crash) and retries safe.
"""

from __future__ import annotations

from celery import Task

from services.common.errors import DependencyUnavailable
from services.ingest.broker import INGEST_FILE_TASK
from services.ingest.worker.backoff import Backoff
from services.ingest.worker.celery_app import WorkerCelery, app
from services.ingest.worker.pipeline import Retry


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
