"""Engine and sessions of the gateway store: SQLite (WAL, busy timeout) or PostgreSQL by URL.

Calls are synchronous SQLAlchemy; :class:`GatewayStore` runs them in a worker thread so the
event loop never blocks on the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.common.database import WRITE_OPTION, add_columns, make_engine
from services.gateway.errors import HttpApiError
from services.gateway.store.tables import ADDED_COLUMNS, GatewayTable


class Database:
    """Owns the engine; ``session(write)`` is one transaction, committed on success."""

    def __init__(self, url: str, sqlite_busy_timeout_s: float = 30.0) -> None:
        self.engine = make_engine(url, sqlite_busy_timeout_s)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    def create_schema(self) -> None:
        """Create the ``gw_`` tables that are missing (idempotent, safe for several replicas)."""
        GatewayTable.metadata.create_all(self.engine, checkfirst=True)
        add_columns(self.engine, ADDED_COLUMNS)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A transaction; a database that cannot be reached is a 503, not a 500."""
        try:
            with (self._writes if write else self._reads).begin() as session:
                yield session
        except OperationalError as error:
            raise HttpApiError(
                503, f"the gateway's database is unavailable: {error.orig}", code="unavailable"
            ) from error

    def dispose(self) -> None:
        self.engine.dispose()
