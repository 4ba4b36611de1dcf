"""Databases an admin registered for ``text2sql`` through ``/v1/agent/databases``."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from services.common.database import rows_matched
from services.gateway.store.database import Database
from services.gateway.store.tables import AgentDatabaseRow


@dataclass(frozen=True)
class StoredDatabase:
    name: str
    url: str
    created_at: float


def _record(row: AgentDatabaseRow) -> StoredDatabase:
    return StoredDatabase(name=row.name, url=row.url, created_at=row.created_at)


class AgentDatabaseRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self) -> list[StoredDatabase]:
        with self.db.session() as session:
            rows = session.scalars(select(AgentDatabaseRow).order_by(AgentDatabaseRow.name))
            return [_record(row) for row in rows]

    def put(self, name: str, url: str) -> tuple[StoredDatabase, bool]:
        """Register ``name`` (or point it at a new URL); True when it is new."""
        with self.db.session(write=True) as session:
            row = session.get(AgentDatabaseRow, name)
            created = row is None
            if row is None:
                row = AgentDatabaseRow(name=name, url=url, created_at=time.time())
                session.add(row)
            else:
                row.url = url
            return _record(row), created

    def delete(self, name: str) -> bool:
        with self.db.session(write=True) as session:
            deleted = session.execute(delete(AgentDatabaseRow).where(AgentDatabaseRow.name == name))
            return rows_matched(deleted) > 0
