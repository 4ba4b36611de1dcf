"""Engine and sessions of the gateway store: SQLite (WAL, busy timeout) or PostgreSQL by URL.

Calls are synchronous SQLAlchemy; :class:`GatewayStore` runs them in a worker thread so the
event loop never blocks on the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.errors import ApiError
from services.gateway.store.tables import Base


def make_engine(url: str, sqlite_busy_timeout_s: float = 30.0) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout, as the ingest catalog does,
    because the ingest service and its worker write the same file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # a fresh data dir
    engine = create_engine(url, connect_args={"timeout": sqlite_busy_timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's "begin" hook below emits BEGIN itself (pysqlite's implicit one is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers take the lock up front: a deferred transaction that reads, then writes while
        # the ingest worker writes the same file, would fail at once instead of waiting.
        write = connection.get_execution_options().get("zhiku_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """Owns the engine; ``session(write)`` is one transaction, committed on success."""

    def __init__(self, url: str, sqlite_busy_timeout_s: float = 30.0) -> None:
        self.engine = make_engine(url, sqlite_busy_timeout_s)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(self.engine.execution_options(zhiku_write=True), expire_on_commit=False)

    def create_schema(self) -> None:
        """Create the ``gw_`` tables that are missing (idempotent, safe for several replicas)."""
        Base.metadata.create_all(self.engine, checkfirst=True)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A transaction; a database that cannot be reached is a 503, not a 500."""
        try:
            with (self._writes if write else self._reads).begin() as session:
                yield session
        except OperationalError as error:
            raise ApiError(
                503, f"the gateway's database is unavailable: {error.orig}", code="unavailable"
            ) from error

    def dispose(self) -> None:
        self.engine.dispose()
