"""The Celery application factory: one configuration for the API (publisher) and the worker.

Both processes use it, hence its place outside ``api/`` and ``worker/``: the API publishes
ingest tasks and measures the queue (its sweeper), the worker consumes them.

Broker: Redis when a Redis URL is configured, otherwise Celery's SQLAlchemy transport on the
catalog database (the SQLite file embedded), so ``make run`` needs no extra server yet still
runs a real Celery worker. No result backend: a job's state lives in the catalog.
"""

from __future__ import annotations

import datetime
import logging
import time
from json import dumps, loads
from queue import Empty
from typing import Any, cast

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import sqlalchemy as kombu_sqla
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str
from sqlalchemy import Engine, event, insert, select, text, update
from sqlalchemy.exc import OperationalError

from services.common.database import rows_matched
from services.ingest.config import IngestSettings

# The registered task name is part of the queue's wire format: keep it when refactoring
# (a renamed task needs a shim for one release so queued messages survive a rolling deploy).
INGEST_FILE_TASK = "zhiku.ingest.ingest_file"
# The jobs of one upload in one message (their ids): one publish, one claim, one ack.
INGEST_FILES_TASK = "zhiku.ingest.ingest_files"
SYNC_SOURCE_TASK = "zhiku.ingest.sync_source"

SQLA_POLLING_INTERVAL_S = 0.1

log = logging.getLogger("zhiku.ingest.broker")


class SqlaChannel(kombu_sqla.Channel):
    """kombu's channel, with the catalog's SQLite settings and less work per message and poll.

    The catalog runs SQLite in WAL mode with ``synchronous=NORMAL``; kombu's own connections
    would use the default FULL, an fsync per published message (most of an upload's time).

    kombu looks the queue's row up through the ORM on every publish and every poll, and
    starts every poll with ``BEGIN IMMEDIATE`` (the database's write lock), even when the
    queue is empty: most of the worker's broker CPU, and a writer the catalog's own writes
    queue behind. Queue rows are never deleted (kombu keeps them; purges delete only
    messages), so their ids are remembered per channel; a poll first reads whether any
    message is waiting and takes the write lock only to claim one, with kombu's semantics
    (oldest first, marked invisible, version checked) in plain SQL instead of the ORM.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue_ids: dict[str, int] = {}

    def _queue_id(self, queue: str) -> int:
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            queue_id = int(self._get_or_create(queue).id)
            self._queue_ids[queue] = queue_id
        return queue_id

    # kombu's sqlalchemy Channel overrides _put and _get with these signatures, narrower than
    # its virtual base class declares.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        messages = self.message_cls.__table__
        row = {"queue_id": self._queue_id(queue), "payload": dumps(payload), "visible": True, "version": 1}
        session = self.session
        try:
            session.execute(insert(messages).values(**row))
            session.commit()
        except OperationalError:
            # Fail the publish (it can be retried) rather than report an unstored message.
            session.rollback()
            raise

    def _get(self, queue: str) -> Any:  # type: ignore[override]
        """kombu's claim (oldest visible message -> invisible, version bumped), as plain SQL."""
        queue_id = self._queue_id(queue)
        messages = self.message_cls.__table__
        waiting = messages.c.queue_id == queue_id, messages.c.visible.is_(True)
        session = self.session
        try:
            found = session.execute(select(messages.c.id).where(*waiting).limit(1)).first()
        finally:
            session.commit()  # ends the read; nothing was written
        if found is None:
            raise Empty()
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            oldest = session.execute(
                select(messages.c.id, messages.c.payload, messages.c.version)
                .where(*waiting)
                .order_by(messages.c.timestamp, messages.c.id)
                .limit(1)
                .with_for_update()
            ).first()
            if oldest is None:
                raise Empty()
            claimed = session.execute(
                update(messages)
                .where(messages.c.id == oldest.id, messages.c.version == oldest.version)
                .values(visible=False, timestamp=datetime.datetime.now(), version=oldest.version + 1)
            )
            if rows_matched(claimed) != 1:
                raise Empty()  # another consumer took it
            return loads(bytes_to_str(oldest.payload))
        finally:
            session.commit()

    def _get_or_create(self, queue: str) -> Any:
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            return super()._get_or_create(queue)  # type: ignore[misc]  # kombu's, missing in its stubs
        # kombu's other calls (size, purge) need only the row's id: answer without a query.
        return _QueueRef(queue_id)

    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        return engine


class _QueueRef:
    """Stands in for kombu's Queue row where only its id is read."""

    __slots__ = ("id",)

    def __init__(self, queue_id: int) -> None:
        self.id = queue_id


class SqlaTransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport, polling every 0.1 s instead of every second.

    The interval cannot travel in ``broker_transport_options``: this transport hands those
    options to ``create_engine``, which rejects the unknown keyword, hence a subclass.
    """

    Channel = SqlaChannel
    polling_interval = SQLA_POLLING_INTERVAL_S


class IngestCelery(Celery):
    """A Celery app that carries its settings (the worker's subclass adds its pipeline)."""

    def __init__(self, settings: IngestSettings, **kwargs: Any) -> None:
        super().__init__("zhiku-ingest", **kwargs)
        self.settings = settings


def broker_config(settings: IngestSettings) -> dict[str, Any]:
    """broker_url, broker_transport and its options for the configured broker."""
    if settings.redis_url:
        return {
            "broker_url": settings.redis_url,
            # With acks_late, Redis redelivers a task unacknowledged for this long.
            "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        }
    options: dict[str, Any] = {}
    if settings.is_sqlite:
        # The API, the worker and the broker share one SQLite file: wait for the lock.
        options["connect_args"] = {"timeout": settings.sqlite_busy_timeout_s}
    return {
        # Plain SQLAlchemy URL plus an explicit transport class (a "sqla+" URL would pick
        # kombu's own class with its 1 s polling).
        "broker_url": settings.catalog_url,
        "broker_transport": SqlaTransport,
        "broker_transport_options": options,
    }


def create_celery_app(settings: IngestSettings, set_as_current: bool = False) -> IngestCelery:
    app = IngestCelery(settings, set_as_current=set_as_current)
    configure_celery_app(app)
    return app


def configure_celery_app(app: IngestCelery) -> None:
    """Broker, queue and delivery semantics, from the app's settings (the worker's app too)."""
    settings = app.settings
    app.conf.update(
        **broker_config(settings),
        task_default_queue=settings.queue,
        task_routes={
            INGEST_FILE_TASK: {"queue": settings.queue},
            INGEST_FILES_TASK: {"queue": settings.queue},
            SYNC_SOURCE_TASK: {"queue": settings.queue},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )


def prepare_broker(app: Celery, attempts: int = 10) -> None:
    """Declare the task queue before any traffic, winning the first-use race on the SQL broker.

    kombu's SQLAlchemy transport creates its tables and the queue's row lazily, on first use.
    When two processes make that first use at once (the API publishing its first task while
    the worker starts consuming) the loser fails on a unique constraint that kombu does not
    retry, and a task is lost. Both processes call this at startup; the retry lets the loser
    find the winner's row. (Redis declares idempotently and needs none of this.)
    """
    queue = app.amqp.queues[app.conf.task_default_queue]
    for attempt in range(1, attempts + 1):
        try:
            with app.connection_for_write() as connection:
                queue(connection.default_channel).declare()
            return
        except Exception as error:
            if attempt == attempts:
                raise
            log.info("declaring queue %s raced another process (%s); retrying", queue.name, error)
            time.sleep(0.05 * attempt)


def queue_length(app: Celery) -> int:
    """Messages waiting in the ingest queue (not those a worker already fetched); blocking."""
    with app.connection_for_write() as connection:
        try:
            # Redis or SQLAlchemy transport: both channels are kombu's virtual ones.
            channel = cast(kombu_virtual.Channel, connection.default_channel)
            declared = channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
        except ChannelError:  # Redis: an empty queue does not exist
            return 0
        return int(declared.message_count)


def enqueue_ingest(app: Celery, *job_ids: str, countdown: float | None = None) -> None:
    """Publish the jobs as one task (one message for the files of an upload); blocking (the
    broker round trip), so call it off the event loop. ``countdown``: not before so many s."""
    args: list[str] | list[list[str]]
    if len(job_ids) == 1:
        task, args = INGEST_FILE_TASK, [job_ids[0]]
    else:
        task, args = INGEST_FILES_TASK, [list(job_ids)]
    app.send_task(task, args=args, queue=app.conf.task_default_queue, countdown=countdown)


def enqueue_sync(app: Celery, run_id: str) -> None:
    """Publish one source sync (its run id); blocking, like :func:`enqueue_ingest`."""
    app.send_task(SYNC_SOURCE_TASK, args=[run_id], queue=app.conf.task_default_queue)
