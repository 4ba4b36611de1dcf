"""The worker's Celery app: ``celery -A services.ingest.worker.celery_app worker --pool=threads``.

Configured from the environment like every Zhiku process (IngestSettings). Run it with the
threads pool (or solo): the tasks wait on gRPC calls (embed, retrieve) most of the time, gRPC
channels must not cross a fork, and one process means one Prometheus registry on
``worker_metrics_port`` that sees every task.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery.signals import setup_logging, worker_init, worker_shutdown

from services.common.heap import freeze_startup_heap
from services.common.logging import configure_logging
from services.common.metrics import serve_metrics
from services.common.tracing import setup_tracing
from services.ingest.broker import IngestCelery, configure_celery_app, prepare_broker
from services.ingest.config import IngestSettings
from services.ingest.worker.pipeline import IngestPipeline

log = logging.getLogger("zhiku.ingest.worker")


class WorkerCelery(IngestCelery):
    """The worker's Celery app: the shared configuration plus this process's pipeline."""

    def __init__(self, settings: IngestSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._pipeline: IngestPipeline | None = None
        self._pipeline_lock = threading.Lock()
        self._job_pool: ThreadPoolExecutor | None = None

    def pipeline(self) -> IngestPipeline:
        """The worker's pipeline (catalog, blob store, gRPC channels), built once per process."""
        with self._pipeline_lock:
            if self._pipeline is None:
                self._pipeline = IngestPipeline.from_settings(self.settings)
            return self._pipeline

    def job_pool(self) -> ThreadPoolExecutor:
        """Threads running the jobs of batch messages (``batch_job_threads``), one per process."""
        with self._pipeline_lock:
            if self._job_pool is None:
                self._job_pool = ThreadPoolExecutor(
                    self.settings.batch_job_threads, thread_name_prefix="ingest-job"
                )
            return self._job_pool

    def close_pipeline(self) -> None:
        with self._pipeline_lock:
            if self._job_pool is not None:
                self._job_pool.shutdown(wait=True, cancel_futures=True)
                self._job_pool = None
            if self._pipeline is not None:
                self._pipeline.close()
                self._pipeline = None


app = WorkerCelery(IngestSettings(), set_as_current=True)
configure_celery_app(app)
app.conf.include = ["services.ingest.worker.tasks"]


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Our JSON log format instead of Celery's own (connecting here disables Celery's setup)."""
    common = app.settings.common
    configure_logging("worker", common.log_level, common.log_json)


def _is_prefork(pool: Any) -> bool:
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return "prefork" in str(name)


@worker_init.connect
def _start(sender: Any = None, **_: Any) -> None:
    worker_app = getattr(sender, "app", app)
    if not isinstance(worker_app, WorkerCelery):
        return
    serve_metrics(worker_app.settings.worker_metrics_port)
    setup_tracing("worker", worker_app.settings.common)  # off unless ZHIKU_OTEL_ENDPOINT is set
    if not worker_app.settings.redis_url:
        prepare_broker(worker_app)
    if _is_prefork(getattr(sender, "pool_cls", "")):
        # Each forked child opens its own pipeline on its first task (nothing gRPC may cross
        # a fork), and this process's /metrics cannot see the children's counters.
        log.warning("prefork pool: run the ingest worker with --pool=threads for task metrics")
    else:
        # Open the catalog (creating tables) and the channels now, not inside the first task.
        worker_app.pipeline()
        freeze_startup_heap()
    log.info("ingest worker ready on queue %s", worker_app.settings.queue)


@worker_shutdown.connect
def _stop(sender: Any = None, **_: Any) -> None:
    worker_app = getattr(sender, "app", app)
    if isinstance(worker_app, WorkerCelery):
        worker_app.close_pipeline()
