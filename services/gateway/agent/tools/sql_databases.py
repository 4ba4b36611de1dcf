"""Databases an admin registered for ``text2sql``, opened read-only with a statement timeout.

Each registered SQLAlchemy URL gets one engine. Writes are refused by the database itself,
whatever the SQL check let through:

- PostgreSQL: every session starts with ``default_transaction_read_only = on`` and
  ``statement_timeout``, and every transaction with ``SET TRANSACTION READ ONLY`` and its own
  ``SET LOCAL statement_timeout``; a query running past the timeout is cancelled by the
  server. Rows come through a server-side cursor, and PostgreSQL accepts only a query there.
- SQLite: the file is opened with ``mode=ro`` (a URI) and ``PRAGMA query_only = ON``; SQLite
  has no statement timeout, so a progress handler interrupts a query past its deadline.

Rows are fetched up to the limit (plus one, to say that there were more) from a server-side
cursor, so a huge result is never loaded whole. Queries run in a worker thread (SQLAlchemy's
drivers here are synchronous).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from services.gateway.agent.tools.base import ToolError
from services.gateway.agent.tools.sql_guard import DIALECTS

SUPPORTED_BACKENDS = ("postgresql", "sqlite")
# Characters of one cell shown (long text is cut, binary data summarised).
MAX_CELL_CHARS = 500
# How often (in SQLite virtual machine instructions) the deadline is checked.
SQLITE_PROGRESS_STEPS = 10_000
# Where a pooled SQLite connection keeps its deadline (each connection has its own).
DEADLINE_KEY = "zhiku_deadline"


@dataclass(frozen=True)
class QueryResult:
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


@dataclass(frozen=True)
class TableColumn:
    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class DatabaseTable:
    name: str
    columns: list[TableColumn]
    kind: str = "table"


def backend_of(url: str) -> str:
    """``postgresql`` or ``sqlite`` for a supported URL; ValueError naming the problem else."""
    try:
        parsed = make_url(url)
    except Exception as error:  # SQLAlchemy raises ArgumentError and ValueError alike
        raise ValueError(f"not a SQLAlchemy URL: {error}") from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"text2sql supports {' and '.join(SUPPORTED_BACKENDS)} databases, not {backend!r}")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("a text2sql SQLite database must be a file")
    return backend


def _read_only_sqlite(url: URL) -> URL:
    """The same file, opened read-only through SQLite's URI form."""
    query = dict(url.query)
    query.update({"mode": "ro", "uri": "true"})
    database = url.database or ""
    if not database.startswith("file:"):
        database = f"file:{database}"
    return url.set(database=database, query=query)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    shown = value if isinstance(value, str) else str(value)
    return shown if len(shown) <= MAX_CELL_CHARS else shown[:MAX_CELL_CHARS] + "…"


@dataclass
class _Deadline:
    """When the query running on a SQLite connection must stop (None: no query running)."""

    at: float | None = None


@dataclass
class RegisteredDatabase:
    """One registered database: its read-only engine and limits."""

    name: str
    url: str
    timeout_s: float
    max_rows: int
    backend: str = field(init=False)
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.backend = backend_of(self.url)
        url = make_url(self.url)
        if self.backend == "sqlite":
            self.engine = create_engine(_read_only_sqlite(url))
            event.listen(self.engine, "connect", self._on_sqlite_connect)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
            event.listen(self.engine, "connect", self._on_postgres_connect)
            event.listen(self.engine, "begin", self._on_postgres_begin)

    @property
    def dialect(self) -> str:
        """sqlglot's name for this database's SQL dialect."""
        return DIALECTS[self.backend]

    @property
    def _timeout_ms(self) -> int:
        return max(1, int(self.timeout_s * 1000))

    def _on_postgres_connect(self, dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
            cursor.execute(f"SET statement_timeout = {self._timeout_ms}")
        dbapi_connection.commit()

    def _on_postgres_begin(self, connection: Any) -> None:
        # Per transaction as well, so no session setting changed by an earlier query matters.
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {self._timeout_ms}")

    def _on_sqlite_connect(self, dbapi_connection: sqlite3.Connection, record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")
        deadline = record.info[DEADLINE_KEY] = _Deadline()

        def past_deadline() -> int:
            return int(deadline.at is not None and time.monotonic() > deadline.at)

        dbapi_connection.set_progress_handler(past_deadline, SQLITE_PROGRESS_STEPS)

    async def query(self, sql: str) -> QueryResult:
        """Run an already checked SELECT; database errors become :class:`ToolError`."""
        return await asyncio.to_thread(self._query, sql)

    def _query(self, sql: str) -> QueryResult:
        try:
            with self.engine.connect() as connection:
                deadline = connection.info.get(DEADLINE_KEY, _Deadline())
                deadline.at = time.monotonic() + self.timeout_s
                try:
                    result = connection.exec_driver_sql(
                        self._literal(sql), execution_options={"stream_results": True}
                    )
                    columns = list(result.keys())
                    fetched = result.fetchmany(self.max_rows + 1)
                finally:
                    deadline.at = None
                connection.rollback()
        except (DBAPIError, OperationalError) as error:
            raise ToolError(self._explain(error)) from None
        rows = [[_cell(value) for value in row] for row in fetched[: self.max_rows]]
        return QueryResult(sql=sql, columns=columns, rows=rows, truncated=len(fetched) > self.max_rows)

    def _literal(self, sql: str) -> str:
        """``sql`` as the driver must receive it to run it as written: drivers with ``%s``
        placeholders (psycopg) read a lone ``%`` (``LIKE 'A%'``) as one, so it is doubled."""
        return sql.replace("%", "%%") if self.engine.dialect.paramstyle in ("format", "pyformat") else sql

    def _explain(self, error: DBAPIError) -> str:
        original = error.orig
        message = str(original).strip().splitlines()[0] if original is not None else str(error)
        cancelled = type(original).__name__ == "QueryCanceled" or (
            isinstance(original, sqlite3.OperationalError) and "interrupted" in message
        )
        if cancelled:
            return f"the query ran longer than {self.timeout_s:g} s and was cancelled"
        return f"the database refused the query: {message}"

    async def describe(self) -> list[DatabaseTable]:
        return await asyncio.to_thread(self._describe)

    def _describe(self) -> list[DatabaseTable]:
        try:
            with self.engine.connect() as connection:
                inspector = inspect(connection)
                tables = [(name, "table") for name in inspector.get_table_names()]
                tables += [(name, "view") for name in inspector.get_view_names()]
                described = [
                    DatabaseTable(
                        name=name,
                        kind=kind,
                        columns=[
                            TableColumn(str(column["name"]), str(column["type"]), bool(column.get("nullable", True)))
                            for column in inspector.get_columns(name)
                        ],
                    )
                    for name, kind in tables
                ]
                connection.rollback()
        except SQLAlchemyError as error:
            raise ToolError(f"the database could not be described: {error}") from None
        return described

    def dispose(self) -> None:
        self.engine.dispose()


def open_databases(urls: dict[str, str], *, timeout_s: float, max_rows: int) -> dict[str, RegisteredDatabase]:
    """Engines for the registered databases (nothing connects until the first query)."""
    return {
        name: RegisteredDatabase(name=name, url=url, timeout_s=timeout_s, max_rows=max_rows)
        for name, url in urls.items()
    }
