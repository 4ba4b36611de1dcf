"""Fixtures that build real things: gRPC servers on free ports, SQLite files, PostgreSQL databases.

Servers run in a background thread with their own event loop, so test bodies can be plain
synchronous code (like the Celery worker they exercise) while the servers keep answering:
the worker subprocess calls embed and retrieve while a test is blocked polling a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql

from services.common.config import CommonSettings, ServiceSettings
from services.common.grpc_server import GrpcService, ServiceSpec
from services.embed.config import EmbedSettings
from services.embed.server import build_spec as build_embed_spec
from services.ingest.config import IngestSettings
from services.ingest.jobs import JobLifecycle
from services.ingest.store.catalog import Catalog
from services.ingest.store.tables import CatalogBase
from services.retrieve.config import RetrieveSettings
from services.retrieve.server import build_spec as build_retrieve_spec
from zhiku.v1 import embed_pb2, embed_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
EVALDATA = Path(os.environ.get("ZHIKU_EVALDATA", REPO.parent / "shared" / "evaldata"))
DOCS = EVALDATA / "docs"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


class BackgroundService:
    """A GrpcService served from its own thread and event loop; ``port`` is its bound port."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self._spec = spec
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"grpc-{spec.name}", daemon=True)
        self._service: GrpcService | None = None

    @property
    def port(self) -> int:
        if self._service is None:
            raise RuntimeError("service not started")
        return self._service.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300) -> BackgroundService:
        self._thread.start()

        async def start() -> GrpcService:
            service = GrpcService(self._spec, self._settings)
            await service.start()
            return service

        self._service = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout_s)
        return self

    def stop(self) -> None:
        if self._service is not None:
            asyncio.run_coroutine_threadsafe(self._service.stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@contextlib.contextmanager
def background_service(spec: ServiceSpec, settings: ServiceSettings) -> Iterator[BackgroundService]:
    service = BackgroundService(spec, settings).start()
    try:
        yield service
    finally:
        service.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unused_address() -> str:
    """A loopback address nothing listens on: a dependency that is down."""
    return f"127.0.0.1:{free_port()}"


def ingest_settings(data_dir: Path, **overrides: Any) -> IngestSettings:
    """Settings for an in-process ingest server; every field a stray ZHIKU_* variable could set is pinned."""
    common_fields = {key: overrides.pop(key) for key in ("embed_addr", "retrieve_addr") if key in overrides}
    common = CommonSettings(data_dir=data_dir, log_json=False, **common_fields)
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 0,
        "catalog_url": f"sqlite:///{data_dir / 'catalog.db'}",
        "redis_url": "",
        "blob_dir": data_dir / "blobs",
        "queue": f"zhiku-test-{uuid.uuid4().hex[:10]}",
        "metrics_refresh_s": 0,
        "retry_backoff_s": 0.2,
        "common": common,
        **overrides,
    }
    return IngestSettings(**values)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"zhiku_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _reset_postgres(url: str) -> None:
    catalog = Catalog(url)
    try:
        CatalogBase.metadata.drop_all(catalog.engine)
    finally:
        catalog.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The catalog URL of each supported database, empty at the start of the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    yield url
    _reset_postgres(url)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    store = Catalog(catalog_url, sqlite_busy_timeout_s=10)
    store.create_schema()
    yield store
    store.dispose()


@pytest.fixture
def lifecycle(catalog: Catalog) -> JobLifecycle:
    return JobLifecycle(catalog)


@dataclass
class Dependencies:
    embed_address: str
    retrieve_address: str
    embed_model: str


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dependencies]:
    base = tmp_path_factory.mktemp("deps")
    embed_settings = EmbedSettings(
        backend="local",
        local_model="use",
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        shutdown_grace_s=0,
        common=CommonSettings(data_dir=base),
    )
    retrieve_settings = RetrieveSettings(
        backend="edge",
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        shutdown_grace_s=0,
        common=CommonSettings(data_dir=base / "retrieve"),
    )
    with (
        background_service(build_embed_spec(embed_settings), embed_settings) as embed,
        background_service(build_retrieve_spec(retrieve_settings), retrieve_settings) as retrieve,
        grpc.insecure_channel(embed.address) as channel,
    ):
        info = embed_pb2_grpc.EmbedServiceStub(channel).Info(embed_pb2.EmbedInfoRequest(), timeout=60)
        yield Dependencies(embed.address, retrieve.address, info.model)
