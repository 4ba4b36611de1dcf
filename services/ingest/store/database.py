"""The catalog database: engine, short transactions and schema creation, shared by every repository.

The API process and the Celery worker write the same rows concurrently. On SQLite the file runs
in WAL mode (readers never wait for the writer), with a busy timeout, and write transactions
start with ``BEGIN IMMEDIATE`` so two writers queue up instead of failing on a read-to-write
lock upgrade. A database that does not answer surfaces as ``DependencyUnavailable``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from services.common.database import WRITE_OPTION, add_columns, is_sqlite, make_engine
from services.common.errors import DependencyUnavailable, kb_not_found
from services.ingest.store.tables import ADDED_COLUMNS, CatalogBase, KnowledgeBaseRow

T = TypeVar("T")


class CatalogDatabase:
    """One engine and its session factories; every unit of work is one short transaction."""

    def __init__(self, url: str, sqlite_busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        self.engine: Engine = make_engine(url, sqlite_busy_timeout_s, sqlite_synchronous="NORMAL")
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        # SQLite has one writer at a time; a writer that finds the lock taken sleeps in
        # SQLite's busy handler (1, 2, 5, 10 ... 100 ms steps) and wakes up late. Writers of
        # this process (the worker's threads) queue here instead, each woken the moment the
        # previous one commits; only writers of other processes still meet the busy handler.
        self._write_turn = threading.RLock() if self.is_sqlite else None

    def create_schema(self) -> None:
        """Create missing tables; safe when the API and the worker race to do it."""
        for attempt in range(3):
            try:
                CatalogBase.metadata.create_all(self.engine)
                # Columns newer than an existing database (a catalog from an earlier release).
                add_columns(self.engine, ADDED_COLUMNS)
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool) -> Iterator[Session]:
        """A transaction, committed on leaving; writers of this process take turns on SQLite."""
        factory = self._writes if write else self._reads
        turn = self._write_turn if write and self._write_turn is not None else contextlib.nullcontext()
        try:
            with turn, factory.begin() as session:
                yield session
        except OperationalError as error:
            raise DependencyUnavailable(f"catalog database unavailable: {error.orig}") from error

    @staticmethod
    def retry_on_conflict(work: Callable[[], T]) -> T:
        """Run ``work`` again once when a concurrent insert of the same key beat it."""
        try:
            return work()
        except IntegrityError:
            return work()

    @staticmethod
    def kb_row(session: Session, name: str) -> KnowledgeBaseRow:
        """The knowledge base's row; NotFound when there is none."""
        row = session.scalar(select(KnowledgeBaseRow).where(KnowledgeBaseRow.name == name))
        if row is None:
            raise kb_not_found(name)
        return row
