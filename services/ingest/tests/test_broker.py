"""The Celery app's broker choice, and the SQL broker's first-use race between processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import cast

import pytest
from kombu.transport import virtual as kombu_virtual

from services.ingest.broker import (
    INGEST_FILE_TASK,
    SQLA_POLLING_INTERVAL_S,
    SqlaChannel,
    SqlaTransport,
    create_celery_app,
    enqueue_ingest,
    prepare_broker,
    queue_length,
)
from services.ingest.tests.conftest import REPO, ingest_settings


def test_without_redis_the_broker_is_the_sql_transport_on_the_catalog(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path)
    app = create_celery_app(settings)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, SqlaTransport)
        assert connection.transport.polling_interval == SQLA_POLLING_INTERVAL_S
        assert connection.hostname == settings.catalog_url
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_routes[INGEST_FILE_TASK] == {"queue": settings.queue}
    app.close()


def test_with_redis_the_broker_is_redis(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path, redis_url="redis://127.0.0.1:6379/13")
    app = create_celery_app(settings)
    with app.connection_for_write() as connection:
        assert connection.transport.driver_type == "redis"
    assert app.conf.broker_transport_options["visibility_timeout"] == settings.visibility_timeout_s
    app.close()


_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from services.ingest.broker import create_celery_app, enqueue_ingest, prepare_broker
    from services.ingest.config import IngestSettings

    settings = IngestSettings(catalog_url=sys.argv[1], redis_url="", queue="race")
    app = create_celery_app(settings)
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    prepare_broker(app)
    enqueue_ingest(app, sys.argv[3])
    print("published")
    """
)


def test_processes_racing_to_first_use_the_sql_broker_all_publish(tmp_path: Path) -> None:
    """Without prepare_broker about half of such races lose a task to a unique-constraint error."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    start = time.time() + 2  # every process is imported and waiting when the race begins
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, url, str(start), f"job-{i}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
    app = create_celery_app(ingest_settings(tmp_path, catalog_url=url, queue="race"))
    received = []
    with app.connection_for_read() as connection, connection.SimpleQueue("race") as queue:
        while True:
            try:
                message = queue.get(timeout=0.5)
            except queue.Empty:
                break
            received.append(message.payload[0][0])
            message.ack()
    app.close()
    assert sorted(received) == [f"job-{i}" for i in range(4)]


@pytest.mark.parametrize("redis_url", ["", "redis://127.0.0.1:6379/13"], ids=["sqla", "redis"])
def test_queue_length_counts_waiting_messages_and_sqlite_publishes_without_fsync(
    tmp_path: Path, redis_url: str
) -> None:
    settings = ingest_settings(tmp_path, redis_url=redis_url)
    app = create_celery_app(settings)
    try:
        prepare_broker(app)
        assert queue_length(app) == 0
        for _ in range(3):
            enqueue_ingest(app, str(uuid.uuid4()))
        assert queue_length(app) == 3  # what the sweeper checks before republishing queued jobs
        if not redis_url:
            with app.connection_for_write() as connection:
                channel = cast(SqlaChannel, connection.default_channel)
                engine, _ = channel._open()
                with engine.connect() as db:
                    assert db.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        with app.connection_for_write() as connection:
            virtual_channel = cast(kombu_virtual.Channel, connection.default_channel)
            virtual_channel.queue_purge(settings.queue)
            if redis_url:
                virtual_channel.queue_delete(settings.queue)
        app.close()
