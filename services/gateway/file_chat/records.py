"""Temporary knowledge bases of file chats, with their expiry (stored, so sweeping survives
restarts)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select

from services.common.names import TEMP_KB_PREFIX as TEMP_KB_PREFIX  # one prefix for every service
from services.gateway.store.database import Database
from services.gateway.store.tables import FileChatRow


@dataclass(frozen=True)
class FileChat:
    id: str
    knowledge_base: str
    owner: str | None  # the API key that made it; None while the gateway was open
    created_at: float
    expires_at: float

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


def _record(row: FileChatRow) -> FileChat:
    return FileChat(
        id=row.id,
        knowledge_base=row.knowledge_base,
        owner=row.owner,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


class FileChatRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, ttl_s: float, owner: str | None) -> FileChat:
        """A new id and its knowledge base name (``tmp_<id>``: valid by the naming rules),
        belonging to ``owner`` (recorded before the knowledge base exists, so the owner is
        the only caller ever allowed to create and fill it)."""
        now = time.time()
        chat_id = uuid.uuid4().hex
        row = FileChatRow(
            id=chat_id,
            knowledge_base=f"{TEMP_KB_PREFIX}{chat_id}",
            owner=owner,
            created_at=now,
            expires_at=now + ttl_s,
        )
        with self.db.session(write=True) as session:
            session.add(row)
        return _record(row)

    def get(self, chat_id: str, owner: str | None) -> FileChat | None:
        """The live file chat if ``owner`` made it (``owner`` None: any), else None: unknown,
        expired (even if not swept yet) and someone else's read alike."""
        with self.db.session() as session:
            row = session.get(FileChatRow, chat_id)
            if row is None or row.expires_at <= time.time() or owner not in (None, row.owner):
                return None
            return _record(row)

    def of_knowledge_base(self, knowledge_base: str) -> FileChat | None:
        """The file chat a temporary knowledge base belongs to, expired or not (its owner
        keeps it until the sweeper deletes it)."""
        with self.db.session() as session:
            row = session.scalar(select(FileChatRow).where(FileChatRow.knowledge_base == knowledge_base))
            return None if row is None else _record(row)

    def renew(self, chat_id: str, ttl_s: float) -> FileChat | None:
        """Restart the time to live from now (after ingestion, so slow parsing costs no TTL)."""
        with self.db.session(write=True) as session:
            row = session.get(FileChatRow, chat_id)
            if row is None:
                return None
            row.expires_at = time.time() + ttl_s
            return _record(row)

    def knowledge_bases(self) -> set[str]:
        """Names of every temporary knowledge base still recorded (hidden from listings)."""
        with self.db.session() as session:
            return set(session.scalars(select(FileChatRow.knowledge_base)).all())

    def expired(self, now: float | None = None) -> list[FileChat]:
        with self.db.session() as session:
            rows = session.scalars(
                select(FileChatRow).where(FileChatRow.expires_at <= (now or time.time()))
            ).all()
            return [_record(row) for row in rows]

    def forget(self, chat_id: str) -> None:
        with self.db.session(write=True) as session:
            session.execute(delete(FileChatRow).where(FileChatRow.id == chat_id))
