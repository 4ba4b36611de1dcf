"""The catalog database engine, shared by the ingest service, its worker and the gateway.

They open the same database (one SQLite file by default, PostgreSQL by URL), so they must
open it the same way: on SQLite, WAL so readers never wait for the writer, a busy timeout so a
writer waits for another process's lock instead of failing, and write transactions that take
the lock up front (``BEGIN IMMEDIATE`` for sessions bound with ``zhiku_write=True``): a
deferred transaction that reads and then writes while another process writes fails at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

WRITE_OPTION = "zhiku_write"  # execution option marking sessions that write


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# Connections kept open to a SQLite file per process (the ingest worker runs 48 job threads).
SQLITE_POOL_SIZE = 64


def make_engine(
    url: str, sqlite_busy_timeout_s: float = 30.0, sqlite_synchronous: str | None = None
) -> Engine:
    """An engine for ``url``; SQLite files get their folder created (a fresh data dir) and the
    pragmas above. ``sqlite_synchronous`` (e.g. ``NORMAL``) trades the last commits on power
    loss for fewer fsyncs, for writers that can replay their work."""
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    connect_args = {"timeout": sqlite_busy_timeout_s, "check_same_thread": False}
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A file's connections are kept, not closed on return and reopened with their pragmas:
        # the default pool (5 kept, 10 more closed after each use) cost the ingest worker's 48
        # job threads about 5% of their CPU in bench-ingest's profile. Each costs a handle.
        engine = create_engine(url, connect_args=connect_args, pool_size=SQLITE_POOL_SIZE, max_overflow=16)
    else:
        engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's "begin" hook below emits BEGIN itself (pysqlite's implicit one is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if sqlite_synchronous:
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def add_columns(engine: Engine, added: dict[str, dict[str, str]]) -> None:
    """Add columns newer than an existing database (one from an earlier release):
    ``added`` maps a table to ``{column: DDL}``; columns already there are left alone.

    ``create_all`` creates missing tables only, and a small project needs no migration tool
    for columns that are only ever appended."""
    for table, columns in added.items():
        present = {column["name"] for column in inspect(engine).get_columns(table)}
        for name, ddl in columns.items():
            if name not in present:
                with engine.begin() as connection:
                    connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}"))


def rows_matched(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE run through ``Session.execute`` matched.

    ``Session.execute`` is typed to return a ``Result``; for these statements it is a
    ``CursorResult``, which alone has ``rowcount``.
    """
    return cast(CursorResult[Any], result).rowcount
